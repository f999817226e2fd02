/* Runs a compiled .spark artifact from C through libsparkc.
 *
 *   sparkc compile examples/models/tiny_cnn.onnx -o tiny_cnn.spark
 *   cc examples/c/main.c -I crates/capi/include -L target/release -lsparkc \
 *      -Wl,-rpath,target/release -o run_spark
 *   ./run_spark tiny_cnn.spark
 *
 * Feeds every f32 input a constant 0.5 (symbolic dims at 1) and prints each output.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparkc.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.spark\n", argv[0]);
        return 2;
    }
    sparkc_session *session = sparkc_session_open(argv[1], SPARKC_DEVICE_AUTO);
    if (!session) {
        fprintf(stderr, "error: %s\n", sparkc_last_error());
        return 1;
    }
    printf("device: %s\n", sparkc_session_device(session));

    /* tiny_cnn takes image: f32[N,3,32,32]. */
    static float image[3 * 32 * 32];
    for (size_t i = 0; i < sizeof image / sizeof image[0]; i++) image[i] = 0.5f;
    const int64_t shape[4] = {1, 3, 32, 32};
    sparkc_tensor input = {
        .name = sparkc_session_input_name(session, 0),
        .dtype = SPARKC_FLOAT32,
        .rank = 4,
        .shape = shape,
        .data = image,
        .bytes = sizeof image,
    };

    /* A wrong name is an error that leaves the session usable. */
    sparkc_tensor wrong = input;
    wrong.name = "no_such_input";
    if (sparkc_session_run(session, &wrong, 1) == 0) {
        fprintf(stderr, "a wrong input name was accepted\n");
        return 1;
    }
    printf("refused as expected: %s\n", sparkc_last_error());

    if (sparkc_session_run(session, &input, 1) != 0) {
        fprintf(stderr, "error: %s\n", sparkc_last_error());
        sparkc_session_free(session);
        return 1;
    }
    for (size_t i = 0; i < sparkc_session_output_count(session); i++) {
        sparkc_tensor out;
        if (sparkc_session_output(session, i, &out) != 0 || out.dtype != SPARKC_FLOAT32) {
            fprintf(stderr, "error: output %zu: %s\n", i, sparkc_last_error());
            return 1;
        }
        const float *values = out.data;
        size_t count = out.bytes / sizeof(float);
        double sum = 0;
        printf("%s: [", out.name);
        for (size_t d = 0; d < out.rank; d++) printf(d ? ", %lld" : "%lld", (long long)out.shape[d]);
        printf("]");
        for (size_t k = 0; k < count; k++) {
            sum += values[k];
            if (k < 4) printf(" %.6f", values[k]);
        }
        printf(" ... sum %.6f\n", sum);
    }
    sparkc_session_free(session);
    return 0;
}
