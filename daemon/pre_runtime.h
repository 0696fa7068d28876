/* The pre-runtime stage of mirrorfs: see pre_runtime.go and README.md here. */
#ifndef MIRRORFS_PRE_RUNTIME_H
#define MIRRORFS_PRE_RUNTIME_H

/* Built into the unit tests (internal/stagetest) as well as into the daemon,
 * the stage's symbols take other names there, so both link into one binary. */
#ifdef MFS_TEST
#define mfs_gate mfs_test_gate
#define mfs_pre_runtime mfs_test_pre_runtime
#define mfs_stage_ran mfs_test_stage_ran
#define mfs_status_fd mfs_test_status_fd
#define mfs_orig_cwd mfs_test_orig_cwd
#define mfs_first_word_ms mfs_test_first_word_ms
#define mfs_duration_ms mfs_test_duration_ms
extern int mfs_test_out, mfs_test_err;
int mfs_test_wait(int fd, int group, int daemon, int interrupted_by);
#endif

/* mfs_gate's answers. */
enum { MFS_GATE_STAY = 0, MFS_GATE_DAEMONIZE = 1 };

/* mfs_gate decides, from the command line alone, whether this process is a
 * background mount request. It returns MFS_GATE_STAY for anything else: -f,
 * -d, -o debug, --help, --version, --check-config, a malformed command line
 * (the Go side then reports it in the foreground), a test binary, or a set
 * NOTIFY_SOCKET (systemd Type=notify keeps us in the foreground). */
int mfs_gate(int argc, char *const argv[], const char *notify_socket);

/* mfs_pre_runtime runs the stage: for a background mount request it forks
 * and detaches; the original process never returns from it. */
void mfs_pre_runtime(int argc, char *argv[]);

/* What the stage left for Go (read once, at start-up). */
int mfs_stage_ran(void);
int mfs_status_fd(void);
const char *mfs_orig_cwd(void);

/* How long the original process waits for the daemon's first word: the
 * gate's choice, FIRST_WORD_MS or a longer --ready-timeout. */
long long mfs_first_word_ms(void);

/* A Go duration ("2m", "1m30s") in milliseconds, -1 if it is none. */
long long mfs_duration_ms(const char *s);

#endif
