// Linux calls the HTTP event loop needs that Swift's Glibc module does not
// export (epoll, eventfd). epoll_event is a packed struct on x86-64, so the
// shim passes plain arrays instead of mirroring it in Swift.
#ifndef PREFTUNE_CLINUX_H
#define PREFTUNE_CLINUX_H

#include <stdint.h>

enum {
    PREFTUNE_EPOLLIN = 0x001,
    PREFTUNE_EPOLLOUT = 0x004,
    PREFTUNE_EPOLLERR = 0x008,
    PREFTUNE_EPOLLHUP = 0x010,
    PREFTUNE_EPOLLRDHUP = 0x2000,
};

/// The operations of epoll_ctl (EPOLL_CTL_*).
enum {
    PREFTUNE_EPOLL_ADD = 1,
    PREFTUNE_EPOLL_DELETE = 2,
    PREFTUNE_EPOLL_MODIFY = 3,
};

int preftune_epoll_create(void);
int preftune_epoll_ctl(int epfd, int op, int fd, uint32_t events);
/// Waits for up to `capacity` events; writes each one's fd and event mask.
int preftune_epoll_wait(int epfd, int32_t *fds, uint32_t *events, int capacity, int timeout_ms);
int preftune_eventfd(void);
/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC.
int preftune_accept(int listener);
/// The same, and the peer's IPv4 address (network byte order; 0 for another family).
int preftune_accept_from(int listener, uint32_t *ipv4);

/// The calling thread's name as `top -H` and /proc show it (at most 15 characters).
int preftune_name_current_thread(const char *name);
/// setpriority for one thread (Linux: a thread id is a process id for PRIO_PROCESS); 0 is the calling thread.
int preftune_set_thread_nice(int tid, int nice);

/// Starts `path` with `argv` and `envp` (NULL-terminated), its standard input, output and
/// error on the given descriptors and no other descriptor of this process. The child's pid, or -1.
int preftune_spawn(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd);
/// The calling process gets `signal_number` when its parent dies; -1 if `parent` is gone already.
int preftune_terminate_with_parent(int signal_number, int parent);
/// A pipe whose ends close on exec (pipe2 with O_CLOEXEC).
int preftune_pipe(int fds[2]);

#endif
