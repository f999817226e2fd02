/* sparkc.h: the C ABI of the sparkc runtime (libsparkc).
 *
 * Load a .spark artifact, run it with named tensors, read the outputs. Functions that can
 * fail return NULL or -1; sparkc_last_error() then explains, for the calling thread.
 * A session may be used from one thread at a time; output views stay valid until the
 * session's next run or its release.
 */
#ifndef SPARKC_H
#define SPARKC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where a session runs. */
typedef enum sparkc_device {
    SPARKC_DEVICE_AUTO = 0, /* a GPU when one can run the artifact, else the CPU */
    SPARKC_DEVICE_CPU = 1,
    SPARKC_DEVICE_CUDA = 2
} sparkc_device;

/* Element types, numbered as ONNX numbers them (TensorProto.DataType). */
enum {
    SPARKC_FLOAT32 = 1,
    SPARKC_UINT8 = 2,
    SPARKC_INT8 = 3,
    SPARKC_INT32 = 6,
    SPARKC_INT64 = 7,
    SPARKC_BOOL = 9,
    SPARKC_FLOAT16 = 10,
    SPARKC_BFLOAT16 = 16
};

/* A tensor passed in, or viewed out: little-endian, densely packed, row-major. */
typedef struct sparkc_tensor {
    const char *name;
    int32_t dtype;
    size_t rank;
    const int64_t *shape;
    const void *data;
    size_t bytes;
} sparkc_tensor;

typedef struct sparkc_session sparkc_session;

/* Opens an artifact and prepares it for a device; NULL on error. */
sparkc_session *sparkc_session_open(const char *path, sparkc_device device);
/* Releases a session (NULL is allowed). */
void sparkc_session_free(sparkc_session *session);
/* The device the session runs on, and why when AUTO chose the CPU. */
const char *sparkc_session_device(const sparkc_session *session);
/* Number of graph inputs / outputs. */
size_t sparkc_session_input_count(const sparkc_session *session);
size_t sparkc_session_output_count(const sparkc_session *session);
/* Name of input / output i (NULL when out of range). */
const char *sparkc_session_input_name(const sparkc_session *session, size_t i);
const char *sparkc_session_output_name(const sparkc_session *session, size_t i);
/* Runs on n named inputs (any order); 0 on success, -1 on error (the session stays usable). */
int sparkc_session_run(sparkc_session *session, const sparkc_tensor *inputs, size_t n);
/* A view of output i of the last run; 0 on success, -1 when there is none. */
int sparkc_session_output(const sparkc_session *session, size_t i, sparkc_tensor *out);
/* The calling thread's last error message ("" when none). */
const char *sparkc_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SPARKC_H */
