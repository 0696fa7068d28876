/* The pre-runtime stage: the classic daemon(3) steps, done while the process
 * still has exactly one thread (before the Go runtime starts its own).
 *
 * original ── fork ──> child: setsid ── fork ──> daemon (returns to Go)
 *    │                   └─ _exit(0)
 *    └─ reads the status pipe until "ok" or "err", prints it, exits.
 *
 * The protocol on the status pipe (daemon -> original) is line based:
 *   start PID TIMEOUT_MS   the daemon runs; wait up to TIMEOUT_MS for the rest
 *   ok TEXT                mounted and ready: print TEXT, exit 0
 *   err CODE TEXT          failed: print TEXT to stderr, exit CODE
 * End of file before "ok" or "err" is a failure (the daemon died). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <linux/close_range.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pre_runtime.h"

#ifndef __GLIBC__
#error "the pre-runtime stage needs glibc, which passes argc and argv to constructors"
#endif

/* How long the original process waits at least for the daemon's first
 * word; a longer --ready-timeout on the command line is waited instead (the
 * gate reads it). Go's start-up takes milliseconds on a quiet machine, but
 * on an overloaded one a new process can wait many seconds for a CPU: one
 * who gives the start more time gives it to the daemon's first word too.
 * (Both bounds may be set on the compiler's command line: the unit tests in
 * internal/stagetest shorten them.) */
#ifndef FIRST_WORD_MS
#define FIRST_WORD_MS 30000
#endif
/* How long a stopped daemon gets to unmount and go before SIGKILL. */
#ifndef STOP_GRACE_MS
#define STOP_GRACE_MS 5000
#endif

/* Where the original process prints the daemon's words: the terminal's
 * stdout and stderr, or, in the unit tests, pipes they read. */
#ifdef MFS_TEST
int mfs_test_out = STDOUT_FILENO, mfs_test_err = STDERR_FILENO;
#define OUT_FD mfs_test_out
#define ERR_FD mfs_test_err
#else
#define OUT_FD STDOUT_FILENO
#define ERR_FD STDERR_FILENO
#endif

static int stage_ran;
static int status_fd = -1;
static long long first_word_ms = FIRST_WORD_MS;
static char orig_cwd[PATH_MAX];

int mfs_stage_ran(void) { return stage_ran; }
int mfs_status_fd(void) { return status_fd; }
const char *mfs_orig_cwd(void) { return orig_cwd; }
long long mfs_first_word_ms(void) { return first_word_ms; }

/* Options that take a value in the next argument (or after '='). */
static const char *const value_opts[] = {
	"-o", "--pidfile", "--log", "--ready-timeout", "--unmount-timeout", "--config", "--log-level",
	"--drain-timeout", NULL,
};
/* Options that take no value and leave the start in the background. */
static const char *const flag_opts[] = {"--takeover", "--allow-interruption", NULL};
/* The option whose value also bounds the wait for the first word. */
static const char *const ready_opt[] = {"--ready-timeout", NULL};
/* Options that keep the process in the foreground. */
static const char *const stay_opts[] = {
	"-f", "--foreground", "-d", "-h", "--help", "-V", "--version", "--check-config", NULL,
};

static int in_list(const char *const list[], const char *arg)
{
	for (int i = 0; list[i]; i++) {
		size_t n = strlen(list[i]);
		if (strncmp(arg, list[i], n) != 0)
			continue;
		if (arg[n] == '\0')
			return 1;
		if (arg[n] == '=' && list[i][1] == '-')
			return 1; /* --name=value */
		if (list[i][1] != '-' && list == value_opts)
			return 1; /* -oVALUE */
	}
	return 0;
}

static int has_token(const char *csv, const char *token)
{
	size_t n = strlen(token);
	for (const char *p = csv; p; p = strchr(p, ',')) {
		if (*p == ',')
			p++;
		if (strncmp(p, token, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return 1;
	}
	return 0;
}

static int is_test_binary(const char *argv0)
{
	size_t n = strlen(argv0);
	return n >= 5 && strcmp(argv0 + n - 5, ".test") == 0;
}

/* The value attached to an option (-oX, --log=X), or NULL. */
static const char *attached_value(const char *arg)
{
	const char *eq = strchr(arg, '=');
	if (arg[1] == '-')
		return eq ? eq + 1 : NULL;
	return arg[2] ? arg + 2 : NULL;
}

/* mfs_duration_ms reads a Go duration ("90s", "2m", "1m30s", "1.5h",
 * "250ms") in milliseconds; -1 for anything else (Go then reports it). */
long long mfs_duration_ms(const char *s)
{
	static const struct { const char *name; double ms; } units[] = {
		{"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"\xce\xbcs", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 6e4}, {"h", 3.6e6},
	};
	double total = 0;
	if (!s || !*s)
		return -1;
	while (*s) {
		char *end;
		if (!isdigit((unsigned char)*s) && *s != '.')
			return -1; /* no sign, space, "inf" or "nan": Go takes none */
		double n = strtod(s, &end);
		if (end == s)
			return -1;
		size_t best = 0, which = 0;
		for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
			size_t len = strlen(units[i].name);
			if (len > best && strncmp(end, units[i].name, len) == 0)
				best = len, which = i;
		}
		if (best == 0)
			return -1;
		total += n * units[which].ms;
		s = end + best;
	}
	return total > 9e15 ? -1 : (long long)total;
}

int mfs_gate(int argc, char *const argv[], const char *notify_socket)
{
	int positionals = 0, only_positionals = 0;

	first_word_ms = FIRST_WORD_MS;
	if (argc < 1 || is_test_binary(argv[0]))
		return MFS_GATE_STAY;
	if (notify_socket && *notify_socket)
		return MFS_GATE_STAY;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (only_positionals || arg[0] != '-' || arg[1] == '\0') {
			positionals++;
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			only_positionals = 1;
			continue;
		}
		if (in_list(stay_opts, arg))
			return MFS_GATE_STAY;
		if (in_list(flag_opts, arg) && strchr(arg, '=') == NULL)
			continue;
		if (!in_list(value_opts, arg))
			return MFS_GATE_STAY; /* unknown option: Go reports it */
		const char *value = attached_value(arg);
		if (!value && ++i >= argc)
			return MFS_GATE_STAY; /* missing value: Go reports it */
		if (!value)
			value = argv[i];
		if (strncmp(arg, "-o", 2) == 0 && has_token(value, "debug"))
			return MFS_GATE_STAY;
		if (in_list(ready_opt, arg)) {
			long long ms = mfs_duration_ms(value);
			first_word_ms = ms > FIRST_WORD_MS ? ms : FIRST_WORD_MS;
		}
	}
	return positionals == 2 ? MFS_GATE_DAEMONIZE : MFS_GATE_STAY;
}

/* bail reports a failure of the stage and ends this process. Before the
 * first fork it writes to stderr; in a child it speaks the pipe protocol. */
static void bail(int pipe_fd, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (pipe_fd >= 0)
		dprintf(pipe_fd, "err 1 mirrorfs: %s: %s\n", msg, strerror(saved));
	else
		dprintf(STDERR_FILENO, "mirrorfs: %s: %s\n", msg, strerror(saved));
	_exit(1);
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) { interrupted = sig; }

static void catch_interrupts(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: poll must see EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The original process's view of the daemon while it waits. */
struct waiter {
	int fd;
	char log[PATH_MAX]; /* the daemon's log, from "start" */
	pid_t group;     /* the daemon's process group: the child's pid */
	pid_t daemon;    /* from "start", 0 before */
	long long deadline;
	int stopping;    /* we asked the daemon to go; any answer is a failure */
	int failed;      /* exit code from "err", once it came; 0 before */
	char buf[4096];
	size_t len;
};

static void stop_daemon(struct waiter *w, const char *why)
{
	dprintf(ERR_FD, "mirrorfs: %s; stopping the daemon\n", why);
	if (w->daemon > 0)
		kill(w->daemon, SIGTERM);
	else
		kill(-w->group, SIGTERM);
	w->stopping = 1;
	w->deadline = now_ms() + STOP_GRACE_MS;
}

/* handle_line returns an exit code, or -1 to keep waiting. */
static int handle_line(struct waiter *w, char *line)
{
	if (strncmp(line, "start ", 6) == 0) {
		long long timeout_ms = 0;
		int pid = 0, end = 0;
		if (sscanf(line + 6, "%d %lld %n", &pid, &timeout_ms, &end) >= 2 && !w->stopping) {
			w->daemon = pid;
			w->deadline = now_ms() + timeout_ms;
			if (end > 0)
				snprintf(w->log, sizeof w->log, "%s", line + 6 + end);
		}
		return -1;
	}
	if (strncmp(line, "ok ", 3) == 0) {
		if (w->stopping)
			return -1; /* it became ready as we stopped it: wait for its exit */
		dprintf(OUT_FD, "%s\n", line + 3);
		return 0;
	}
	if (strncmp(line, "err ", 4) == 0) {
		/* Print it now, exit once the daemon is gone (end of file): a
		 * failed start leaves no process behind when the prompt returns. */
		char *text = NULL;
		long code = strtol(line + 4, &text, 10);
		dprintf(ERR_FD, "%s\n", text && *text == ' ' ? text + 1 : line);
		w->failed = code > 0 && code < 126 ? (int)code : 1;
		w->deadline = now_ms() + STOP_GRACE_MS;
		return -1;
	}
	return -1;
}

/* read_lines reads what is available; returns an exit code, -1 to go on,
 * or -2 at end of file. */
static int read_lines(struct waiter *w)
{
	ssize_t n = read(w->fd, w->buf + w->len, sizeof w->buf - 1 - w->len);
	if (n < 0)
		return errno == EINTR ? -1 : -2;
	if (n == 0)
		return -2;
	w->len += (size_t)n;
	w->buf[w->len] = '\0';
	char *nl;
	while ((nl = strchr(w->buf, '\n'))) {
		*nl = '\0';
		int rc = handle_line(w, w->buf);
		w->len -= (size_t)(nl + 1 - w->buf);
		memmove(w->buf, nl + 1, w->len + 1);
		if (rc >= 0)
			return rc;
	}
	if (w->len == sizeof w->buf - 1)
		w->len = 0; /* an overlong line: drop it */
	return -1;
}

static int wait_for_daemon(struct waiter *w)
{
	for (;;) {
		if (interrupted && !w->stopping)
			stop_daemon(w, "interrupted");
		long long left = w->deadline - now_ms();
		if (left <= 0 && w->failed)
			return w->failed; /* it said why; do not wait forever for its exit */
		if (left <= 0 && w->stopping) {
			kill(w->daemon > 0 ? w->daemon : -w->group, SIGKILL);
			dprintf(ERR_FD, "mirrorfs: the daemon (pid %d) did not stop; killed it; a dead mount it left is recovered by the next start (log %s)\n",
				w->daemon > 0 ? w->daemon : w->group, *w->log ? w->log : "unknown");
			return 1;
		}
		if (left <= 0) {
			stop_daemon(w, "not ready within --ready-timeout");
			continue;
		}
		struct pollfd p = { .fd = w->fd, .events = POLLIN };
		int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r <= 0)
			continue; /* EINTR or deadline: the loop head decides */
		int rc = read_lines(w);
		if (rc == -2) {
			if (w->stopping && interrupted)
				return 128 + interrupted;
			if (w->failed)
				return w->failed;
			if (!w->stopping)
				dprintf(ERR_FD, "mirrorfs: the daemon exited before it was ready (see its log: %s)\n",
					*w->log ? w->log : "none yet");
			return 1;
		}
		if (rc >= 0)
			return w->stopping && interrupted ? 128 + interrupted : rc;
	}
}

/* close_from closes fds lo..hi; close_range needs Linux 5.9, so older
 * kernels get a loop. */
static void close_from(unsigned lo, unsigned hi)
{
	if (close_range(lo, hi, 0) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 1 << 20)
		max = 1 << 20;
	for (unsigned fd = lo; fd <= hi && fd < (unsigned)max; fd++)
		close((int)fd);
}

/* open_stdio makes sure fds 0-2 are open, so that the status pipe cannot
 * land on them (and be overwritten by the /dev/null dup2s). */
static void open_stdio(void)
{
	int fd;
	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
		;
	if (fd > 2)
		close(fd);
}

static void become_daemon(int rfd, int wfd)
{
	close(rfd);
	if (setsid() < 0)
		bail(wfd, "setsid");
	pid_t pid = fork();
	if (pid < 0)
		bail(wfd, "second fork");
	if (pid > 0)
		_exit(0);
	if (chdir("/") < 0)
		bail(wfd, "chdir /");
	umask(0);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		bail(wfd, "open /dev/null");
	for (int fd = 0; fd <= 2; fd++)
		if (dup2(null, fd) < 0)
			bail(wfd, "dup2 /dev/null");
	if (null > 2)
		close(null);
	/* Whatever else the caller left open is not ours to keep. */
	if (wfd > 3)
		close_from(3, (unsigned)wfd - 1);
	close_from((unsigned)wfd + 1, ~0U);
	status_fd = wfd;
	stage_ran = 1;
}

void mfs_pre_runtime(int argc, char *argv[])
{
	if (mfs_gate(argc, argv, getenv("NOTIFY_SOCKET")) != MFS_GATE_DAEMONIZE)
		return;
	if (!getcwd(orig_cwd, sizeof orig_cwd))
		bail(-1, "cannot read the current directory");
	open_stdio();
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		bail(-1, "status pipe");
	catch_interrupts();
	pid_t child = fork();
	if (child < 0)
		bail(-1, "fork");
	if (child == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		become_daemon(fds[0], fds[1]);
		return; /* into the Go runtime, as the daemon */
	}
	close(fds[1]);
	while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
		;
	struct waiter w = { .fd = fds[0], .group = child, .deadline = now_ms() + first_word_ms };
	_exit(wait_for_daemon(&w));
}

#ifdef MFS_TEST
/* mfs_test_wait runs the original process's wait on fd, as if the daemon's
 * first child were group and interrupted_by had arrived (0: no signal). */
int mfs_test_wait(int fd, int group, int daemon, int interrupted_by)
{
	struct waiter w = { .fd = fd, .group = group, .daemon = daemon,
		.deadline = now_ms() + first_word_ms };
	interrupted = interrupted_by;
	return wait_for_daemon(&w);
}
#endif
