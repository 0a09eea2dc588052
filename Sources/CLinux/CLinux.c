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
#include <malloc.h>

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

int preftune_release_free_memory(void) { return malloc_trim(0); }
