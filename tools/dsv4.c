/* dsv4 — command-line front end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"

static void usage(FILE *f) {
    fprintf(f,
            "dsv4 %s — DeepSeek-V4 inference with NVFP4 weights\n"
            "usage:\n"
            "  dsv4 make-tiny DIR [--scheme native-nvfp4|native-mxfp4|hf|hf-stacked] [--seed N]\n"
            "  dsv4 inspect DIR\n"
            "  dsv4 version\n",
            dsv4_version());
}

static int fail(dsv4_status st) {
    fprintf(stderr, "dsv4: %s: %s\n", dsv4_status_name(st), dsv4_last_error());
    return 1;
}

static int cmd_make_tiny(int argc, char **argv) {
    const char *dir = NULL;
    dsv4_tiny_scheme scheme = DSV4_TINY_NATIVE_NVFP4;
    unsigned long long seed = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--scheme") && i + 1 < argc) {
            const char *s = argv[++i];
            if (!strcmp(s, "native-nvfp4")) scheme = DSV4_TINY_NATIVE_NVFP4;
            else if (!strcmp(s, "native-mxfp4")) scheme = DSV4_TINY_NATIVE_MXFP4;
            else if (!strcmp(s, "hf")) scheme = DSV4_TINY_HF;
            else if (!strcmp(s, "hf-stacked")) scheme = DSV4_TINY_HF_STACKED;
            else { fprintf(stderr, "dsv4 make-tiny: unknown scheme '%s'\n", s); return 2; }
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 0);
            if (*end) { fprintf(stderr, "dsv4 make-tiny: bad seed '%s'\n", argv[i]); return 2; }
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "dsv4 make-tiny: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) { usage(stderr); return 2; }
    dsv4_status st = dsv4_make_tiny(dir, scheme, seed);
    if (st != DSV4_OK) return fail(st);
    printf("wrote tiny DeepSeek-V4 checkpoint to %s\n", dir);
    return 0;
}

static int cmd_inspect(int argc, char **argv) {
    if (argc != 1) { usage(stderr); return 2; }
    dsv4_status st = dsv4_inspect_dir(argv[0], stdout);
    return st == DSV4_OK ? 0 : fail(st);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "make-tiny")) return cmd_make_tiny(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("dsv4 %s (CUDA %s)\n", dsv4_version(), dsv4_has_cuda() ? "yes" : "no");
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) { usage(stdout); return 0; }
    fprintf(stderr, "dsv4: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
