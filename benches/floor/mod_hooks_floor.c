/*
 * The floor under issue 10's instruction target: a module that registers the hooks
 * mod_socket_guard needs (pre_connection, post_read_request, log_transaction,
 * pre_close_connection, and a pool cleanup per connection to free its slot) and does nothing
 * in them (the status handler declines, as it does for every other request). benches/floor.sh counts what Apache spends just calling them, with
 * benches/instructions.sh, so the module's own work can be told from the cost of being called.
 *
 * It is loaded under mod_socket_guard's module name and accepts (and ignores)
 * SocketGuardScanInterval, so instructions.sh's config works unchanged.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_pools.h"

#include <string.h>

static apr_status_t floor_cleanup(void *data)
{
    (void)data;
    return APR_SUCCESS;
}

static int floor_pre_connection(conn_rec *c, void *csd)
{
    (void)csd;
    apr_pool_cleanup_register(c->pool, c, floor_cleanup, apr_pool_cleanup_null);
    return OK;
}

static int floor_request(request_rec *r)
{
    (void)r;
    return DECLINED;
}

/* Every request reaches each handler hook: mod_socket_guard's declines unless it is its own. */
static int floor_handler(request_rec *r)
{
    if (!r->handler || strcmp(r->handler, "socket-status") != 0) {
        return DECLINED;
    }
    return DECLINED;
}

static int floor_pre_close(conn_rec *c)
{
    (void)c;
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
    ap_hook_pre_connection(floor_pre_connection, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(floor_request, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(floor_request, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_close_connection(floor_pre_close, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(floor_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(socket_guard) = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, floor_cmds, floor_register_hooks
};
