/* The pre-runtime stage of mirrorfs: see pre_runtime.go and README.md here. */
#ifndef MIRRORFS_PRE_RUNTIME_H
#define MIRRORFS_PRE_RUNTIME_H

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

#endif
