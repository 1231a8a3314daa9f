/* cs_status.h -- result codes shared by every csembed native routine.
 *
 * Routines return a cs_status instead of printing or aborting. Values >= 0
 * describe progress of a streaming call; negative values are errors, which
 * the Python layer turns into exceptions of one family.
 */
#ifndef CS_STATUS_H
#define CS_STATUS_H

typedef enum cs_status {
    CS_OK = 0,            /* the call did all it was asked to do */
    CS_NEED_INPUT = 1,    /* all input consumed; feed more (or finish) */
    CS_NEED_OUTPUT = 2,   /* output buffer too full to continue; call again */
    CS_DONE = 3,          /* the stream is complete */
    CS_LITERAL = 4,       /* patch decoder: literal bytes are ready */
    CS_COPY = 5,          /* patch decoder: a copy command is ready */
    CS_ERR_PARAM = -1,    /* caller passed an invalid argument */
    CS_ERR_NOMEM = -2,    /* an allocation failed */
    CS_ERR_MAGIC = -3,    /* stream does not start with a known magic number */
    CS_ERR_CORRUPT = -4,  /* stream content violates the format */
    CS_ERR_LIMIT = -5,    /* a size exceeds a configured limit */
    CS_ERR_STATE = -6     /* call not valid in the object's current state */
} cs_status;

#endif
