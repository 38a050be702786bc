/* The durable-write floor for small PUTs: what the filesystem alone costs for the steps every
 * durable PUT takes, with no HTTP, no S3 and no catalog. Each of THREADS threads repeats:
 * create a temp file in TMP, write SIZE bytes, fsync, rename to a new name in DST, fsync DST.
 * The gateway's small PUT does these plus the request, the signature check, the xattr and the
 * catalog; nginx's PUT does them without either fsync.
 *
 *     floor TMP DST THREADS SECONDS SIZE   ->  one line: ops=N seconds=S
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;
static atomic_long next_key;
static const char *tmp_dir, *dst_dir;
static int dst_fd;
static size_t size;

static void check(int ok, const char *what, const char *path) {
    if (!ok) {
        perror(what);
        fprintf(stderr, "floor: %s %s failed\n", what, path);
        exit(1);
    }
}

static void *run(void *arg) {
    (void)arg;
    char *buf = malloc(size);
    memset(buf, 'x', size);
    char tmp[4096], dst[4096];
    while (!atomic_load(&stop)) {
        long n = atomic_fetch_add(&next_key, 1);
        snprintf(tmp, sizeof tmp, "%s/.tmp-%ld", tmp_dir, n);
        snprintf(dst, sizeof dst, "%s/%06ld", dst_dir, n);
        int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        check(fd >= 0, "open", tmp);
        check(write(fd, buf, size) == (ssize_t)size, "write", tmp);
        check(fsync(fd) == 0, "fsync", tmp);
        check(close(fd) == 0, "close", tmp);
        check(rename(tmp, dst) == 0, "rename", dst);
        check(fsync(dst_fd) == 0, "fsync", dst_dir);
    }
    free(buf);
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: floor TMP DST THREADS SECONDS SIZE\n");
        return 2;
    }
    tmp_dir = argv[1];
    dst_dir = argv[2];
    int threads = atoi(argv[3]);
    double seconds = atof(argv[4]);
    size = strtoul(argv[5], NULL, 10);
    dst_fd = open(dst_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(dst_fd >= 0, "open", dst_dir);
    pthread_t t[256];
    check(threads > 0 && threads <= 256, "threads", argv[3]);
    double t0 = now();
    for (int i = 0; i < threads; i++)
        check(pthread_create(&t[i], NULL, run, NULL) == 0, "pthread_create", "");
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&stop, 1);
    /* Operations in flight at the deadline finish and are counted, as wrk counts the requests
     * that complete; the time runs to the last of them. */
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double wall = now() - t0;
    long ops = atomic_load(&next_key);
    printf("ops=%ld seconds=%.6f\n", ops, wall);
    return 0;
}
