// Package workload is the client load that proves a takeover: processes
// looping over file system calls under a mirror, each counting every call
// that failed (by call and errno) and recording its slowest calls with the
// moment they began.
//
// The clients are processes of their own, copies of the running program
// started again with the role in the environment (RunIfAsked, called first
// thing by the program, runs it): a process whose working folder or open
// file lies in a mount is what keeps a draining daemon serving, and a
// process blocked on a mount must not be the one that drives the test.
//
// The roles, under MNT:
//   - churn (several): in MNT/churnN, create, write, fstat, close, read back,
//     rename, list and unlink, over and over; each in a folder of its own, so
//     that no call is expected to fail.
//   - holder: MNT/held/file open for writing under flock(LOCK_EX), mapped
//     shared; a counter written through write(2) at offset 0 and through the
//     map at offset 4096, read back each time; synced and closed at the end.
//   - lockprobe: opens the held file and tries flock(LOCK_EX|LOCK_NB), which
//     must fail with EWOULDBLOCK for as long as the holder runs.
//   - cwd: its working folder is MNT/cwd; stat, open, read and list by
//     relative names, and every 250 ms it enters MNT/cwd again by its full
//     name, so that the mounts of several takeovers each have a cwd in them.
//
// This package lives beside the end-to-end tests, not in the daemon's tree:
// it is test tooling, shared by e2e and bench, and no part of the binary.
package workload
