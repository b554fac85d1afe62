/*
 * The floor under issue 10's instruction targets, in two builds (benches/floor.sh counts both
 * with benches/instructions.sh, exactly as `make bench` counts the module):
 *
 *   - hooks only: the hooks mod_socket_guard needs (pre_connection and a pool cleanup per
 *     connection to free its slot, post_read_request, log_transaction, pre_close_connection,
 *     a handler that declines every other request) doing nothing: the cost of being called;
 *   - -DFLOOR_WORK: the least the SPEC's tracking asks of those hooks, written as tight C with
 *     no checks for a hostile table, no panic firewall, no die-safe ordering: claim a slot by
 *     compare-and-swap, record fd, both addresses and the vhost, count per vhost, copy method
 *     and path under a sequence counter, three state changes each with a CLOCK_MONOTONIC
 *     timestamp and a compare-and-swap, the in-flight bit, free the slot. What this costs is a
 *     lower bound for any implementation of the same contract.
 *
 * Loaded under mod_socket_guard's module name; accepts (and ignores) SocketGuardScanInterval,
 * so instructions.sh's config works unchanged. Apache -X: one process, a static table.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_pools.h"
#include "apr_network_io.h"
#include "apr_portable.h"

#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

module AP_MODULE_DECLARE_DATA socket_guard_module;

#ifdef FLOOR_WORK
enum { FREE = 0, READING = 1, HANDLING = 2, KEEPALIVE = 3, CLOSING = 4 };
#define NSLOTS 256

struct slot {
    uint64_t lease; /* pid << 32 | tag << 8 | state */
    uint64_t ended_closed, accept_ms, state_since_ms, requests;
    int32_t fd;
    uint32_t vhost, client_ip[4], local_ip[4], client_port, local_port, text_seq, text_len;
    uint64_t method[2], path[12];
};

static struct slot slots[NSLOTS];
static uint64_t inflight[NSLOTS / 64];
static uint64_t vhost_accepted[16], vhost_requests[16];
static uint32_t next_hint, next_tag;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* IPv4 only (the bench's clients are 127.0.0.1), as the ::ffff:a.b.c.d form the module uses. */
static void store_addr(uint32_t ip[4], uint32_t *port, const apr_sockaddr_t *sa)
{
    ip[0] = ip[1] = 0;
    ip[2] = 0xffff;
    memcpy(&ip[3], &sa->sa.sin.sin_addr, 4);
    *port = sa->port;
}

static struct slot *slot_of(conn_rec *c)
{
    uintptr_t w = (uintptr_t)ap_get_module_config(c->conn_config, &socket_guard_module);
    return w ? &slots[w - 1] : NULL;
}

static void enter(struct slot *s, unsigned state)
{
    uint64_t l = __atomic_load_n(&s->lease, __ATOMIC_RELAXED);
    if ((l & 0xff) == state) {
        return;
    }
    __atomic_store_n(&s->state_since_ms, mono_ms(), __ATOMIC_RELAXED);
    __atomic_compare_exchange_n(&s->lease, &l, (l & ~0xffull) | state, 0, __ATOMIC_RELEASE,
                                __ATOMIC_RELAXED);
}

static void copy_text(uint64_t *words, size_t nwords, const char *src, size_t len)
{
    size_t n = len < nwords * 8 ? len : nwords * 8;
    memcpy(words, src, n);
}
#endif

static apr_status_t floor_cleanup(void *data)
{
#ifdef FLOOR_WORK
    if (!data) {
        return APR_SUCCESS; /* no slot was free */
    }
    struct slot *s = &slots[(uintptr_t)data - 1];
    uint64_t l = __atomic_load_n(&s->lease, __ATOMIC_RELAXED);
    if (__atomic_compare_exchange_n(&s->lease, &l, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
        __atomic_fetch_add(&s->ended_closed, 1, __ATOMIC_RELAXED);
    }
#else
    (void)data;
#endif
    return APR_SUCCESS;
}

static int floor_pre_connection(conn_rec *c, void *csd)
{
    void *word = NULL; /* the slot's index + 1, or none */
#ifdef FLOOR_WORK
    uint64_t now = mono_ms();
    uint32_t i;
    for (i = 0; i < NSLOTS; i++) {
        uint32_t idx = (next_hint + i) % NSLOTS;
        uint64_t expect = 0, tag = ++next_tag & 0xffffff;
        uint64_t lease = (uint64_t)getpid() << 32 | tag << 8 | READING;
        if (__atomic_compare_exchange_n(&slots[idx].lease, &expect, lease, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
            struct slot *s = &slots[idx];
            apr_os_sock_t fd;
            apr_os_sock_get(&fd, csd);
            s->fd = fd;
            s->vhost = 0;
            store_addr(s->client_ip, &s->client_port, c->client_addr);
            store_addr(s->local_ip, &s->local_port, c->local_addr);
            s->accept_ms = s->state_since_ms = now;
            s->requests = 0;
            __atomic_fetch_add(&vhost_accepted[0], 1, __ATOMIC_RELAXED);
            next_hint = idx + 1;
            word = (void *)(uintptr_t)(idx + 1);
            ap_set_module_config(c->conn_config, &socket_guard_module, word);
            break;
        }
    }
#else
    (void)csd;
#endif
    apr_pool_cleanup_register(c->pool, word, floor_cleanup, apr_pool_cleanup_null);
    return OK;
}

static int floor_post_read_request(request_rec *r)
{
#ifdef FLOOR_WORK
    struct slot *s = slot_of(r->connection);
    if (s) {
        size_t ml = r->method ? strlen(r->method) : 0;
        size_t pl = r->parsed_uri.path ? strlen(r->parsed_uri.path) : 0;
        s->vhost = 0;
        s->requests++;
        __atomic_fetch_add(&vhost_requests[0], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&s->text_seq, s->text_seq + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        copy_text(s->method, 2, r->method, ml);
        copy_text(s->path, 12, r->parsed_uri.path, pl);
        s->text_len = (uint32_t)(ml | pl << 8);
        __atomic_store_n(&s->text_seq, s->text_seq + 1, __ATOMIC_RELEASE);
        enter(s, HANDLING);
        size_t idx = (size_t)(s - slots);
        __atomic_fetch_or(&inflight[idx / 64], 1ull << (idx % 64), __ATOMIC_RELAXED);
    }
#else
    (void)r;
#endif
    return DECLINED;
}

static int floor_log_transaction(request_rec *r)
{
#ifdef FLOOR_WORK
    struct slot *s = slot_of(r->connection);
    if (s) {
        enter(s, r->connection->keepalive == AP_CONN_KEEPALIVE ? KEEPALIVE : CLOSING);
    }
#else
    (void)r;
#endif
    return DECLINED;
}

/* Every request reaches each handler hook: mod_socket_guard's declines unless it is its own.
 * (Its own is never asked for in the bench; the distinct return keeps the compiler from
 * dropping the comparison.) */
static int floor_handler(request_rec *r)
{
    if (!r->handler || strcmp(r->handler, "socket-status") != 0) {
        return DECLINED;
    }
    return HTTP_NOT_IMPLEMENTED;
}

static int floor_pre_close(conn_rec *c)
{
#ifdef FLOOR_WORK
    struct slot *s = slot_of(c);
    if (s) {
        enter(s, CLOSING);
    }
#else
    (void)c;
#endif
    return OK;
}

static const char *floor_ignore(cmd_parms *cmd, void *dconf, const char *arg)
{
    (void)cmd; (void)dconf; (void)arg;
    return NULL;
}

static const command_rec floor_cmds[] = {
    AP_INIT_TAKE1("SocketGuardScanInterval", floor_ignore, NULL, RSRC_CONF, "ignored"),
    {NULL}
};

static void floor_register_hooks(apr_pool_t *p)
{
    (void)p;
    /* The orders mod_socket_guard registers with. */
    ap_hook_pre_connection(floor_pre_connection, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_pre_close_connection(floor_pre_close, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(floor_post_read_request, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(floor_log_transaction, NULL, NULL, APR_HOOK_LAST);
    ap_hook_handler(floor_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(socket_guard) = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, floor_cmds, floor_register_hooks
};
