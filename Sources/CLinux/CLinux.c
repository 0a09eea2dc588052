#define _GNU_SOURCE
#include "CLinux.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>
#include <spawn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>

int preftune_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int preftune_epoll_ctl(int epfd, int op, int fd, uint32_t events) {
    struct epoll_event event = {.events = events, .data.fd = fd};
    return epoll_ctl(epfd, op, fd, &event);
}

int preftune_epoll_wait(int epfd, int32_t *fds, uint32_t *events, int capacity, int timeout_ms) {
    struct epoll_event ready[256];
    if (capacity > 256) capacity = 256;
    int count = epoll_wait(epfd, ready, capacity, timeout_ms);
    for (int i = 0; i < count; i++) {
        fds[i] = ready[i].data.fd;
        events[i] = ready[i].events;
    }
    return count;
}

int preftune_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int preftune_accept(int listener) { return accept4(listener, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int preftune_accept_from(int listener, uint32_t *ipv4) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int fd = accept4(listener, (struct sockaddr *)&address, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    *ipv4 = (fd >= 0 && address.ss_family == AF_INET) ? ((struct sockaddr_in *)&address)->sin_addr.s_addr : 0;
    return fd;
}

int preftune_name_current_thread(const char *name) { return pthread_setname_np(pthread_self(), name); }

int preftune_set_thread_nice(int tid, int nice) {
    if (tid == 0) tid = (int)syscall(SYS_gettid);
    return setpriority(PRIO_PROCESS, (id_t)tid, nice);
}

int preftune_spawn(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd) {
    posix_spawn_file_actions_t actions;
    if (posix_spawn_file_actions_init(&actions) != 0) return -1;
    int failed = posix_spawn_file_actions_adddup2(&actions, in_fd, 0)
        || posix_spawn_file_actions_adddup2(&actions, out_fd, 1)
        || posix_spawn_file_actions_adddup2(&actions, err_fd, 2)
        // Nothing else of the parent's: not its listening socket, nor its database.
        || posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    // A clean signal state: this process may run with signals blocked (a parent that spawned it
    // so, or threads that block them), and a worker that inherits a blocked SIGTERM cannot be stopped.
    posix_spawnattr_t attributes;
    if (posix_spawnattr_init(&attributes) != 0) { posix_spawn_file_actions_destroy(&actions); return -1; }
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGPIPE);
    failed = failed || posix_spawnattr_setsigmask(&attributes, &none) || posix_spawnattr_setsigdefault(&attributes, &defaults)
        || posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    if (!failed && posix_spawn(&pid, path, &actions, &attributes, argv, envp) != 0) pid = -1;
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return failed ? -1 : pid;
}

int preftune_terminate_with_parent(int signal_number, int parent) {
    if (prctl(PR_SET_PDEATHSIG, signal_number) != 0) return -1;
    // The parent may have died before the call: then no signal would ever come.
    return getppid() == parent ? 0 : -1;
}

int preftune_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
