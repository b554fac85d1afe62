//! Process lifecycle: post_config (parent: the shared table), child_init / child exit (the
//! child's row and guard thread), monitor (parent: reclaim what dead children held).

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering::Relaxed;

use crate::clock::mono_ms;
use crate::config::ServerConfig;
use crate::ffi::bindings as b;
use crate::ffi::callback::callback;
use crate::ffi::shm::{self, Outcome};
use crate::ffi::{conn, log, server_conf};
use crate::guard::{self, Child};
use crate::messages;
use crate::runtime;
use crate::table::layout::MAX_LISTEN_PORTS;
use crate::table::SharedTable;

const OK: c_int = b::OK;
const DECLINED: c_int = b::DECLINED;

fn mpm_query(code: i32) -> i32 {
    let mut v: c_int = 0;
    // SAFETY: ap_mpm_query writes one int for the documented query codes used here.
    let rv = unsafe { b::ap_mpm_query(code, &mut v) };
    if rv == 0 {
        v
    } else {
        0
    }
}

/// Table capacity when SocketGuardSlots is not set: every worker thread the MPM could ever
/// run (its hard limits), times 4 for async MPMs (event keeps idle keep-alive and lingering
/// connections without a thread), plus headroom. Returns (slots, child rows).
fn default_sizes() -> (usize, usize) {
    let daemons = mpm_query(b::AP_MPMQ_HARD_LIMIT_DAEMONS).max(1) as usize;
    let threads = mpm_query(b::AP_MPMQ_HARD_LIMIT_THREADS).max(1) as usize;
    let async_factor = if mpm_query(b::AP_MPMQ_IS_ASYNC) != 0 {
        4
    } else {
        1
    };
    let slots = (daemons * threads * async_factor + 64).min(crate::config::MAX_SLOTS as usize);
    // Old-generation children may overlap new ones during a graceful restart.
    (slots, daemons * 2 + 16)
}

callback!(
    /// Parent, once the whole configuration is read (also under `apache2 -t`): refuses
    /// combinations of directives that no single directive handler can see, since the lines
    /// may come in any order.
    #[on_panic(OK)]
    pub fn check_config(
        _pconf: *mut b::apr_pool_t,
        _plog: *mut b::apr_pool_t,
        _ptemp: *mut b::apr_pool_t,
        s: &b::server_rec,
    ) -> c_int {
        // SAFETY: s is the main server, live for the whole config generation.
        let main = unsafe { server_conf::of(s) }.copied().unwrap_or_default();
        match main.check_hung_child_timeout() {
            Ok(()) => OK,
            Err(msg) => {
                log::err(s, messages::CONFIG_REFUSED, &msg);
                b::HTTP_INTERNAL_SERVER_ERROR as c_int
            }
        }
    }
);

callback!(
    /// Parent, after each configuration pass: find or create the shared table, publish this
    /// generation's settings and servers in it, start the guard process.
    #[on_panic(OK)]
    pub fn post_config(
        pconf: *mut b::apr_pool_t,
        _plog: *mut b::apr_pool_t,
        _ptemp: *mut b::apr_pool_t,
        s: &b::server_rec,
    ) -> c_int {
        // The first pass at start-up is a dry run; shared memory made then would be thrown away.
        // SAFETY: plain query of Apache's global state.
        if unsafe { b::ap_state_query(b::AP_SQ_MAIN_STATE) } == b::AP_SQ_MS_CREATE_PRE_CONFIG {
            return OK;
        }
        // SAFETY: s is the main server, live for the whole config generation.
        let main = unsafe { server_conf::of(s) }.copied().unwrap_or_default();
        let Some(table) = open_table(s, &main) else {
            runtime::set_table(None);
            return OK;
        };
        publish_settings(&table, &main);
        publish_listeners(&table, s);
        // SAFETY: s heads Apache's live server list for this generation; post_config runs in
        // the parent, single-threaded, as the config-time write requires.
        unsafe { register_servers(&table, s) };
        runtime::set_table(Some(table));
        // SAFETY: root parent, post_config of a real (not config-check) pass, with pconf.
        unsafe { crate::ffi::guard_process::start(pconf) };
        OK
    }
);

/// Finds the table of the previous generation or creates one (sized by SocketGuardSlots or
/// the MPM's limits), and says which in the log. None: no shared memory, nothing is tracked.
fn open_table(s: &b::server_rec, main: &ServerConfig) -> Option<SharedTable> {
    let (auto_slots, nchildren) = default_sizes();
    let nslots = main.slots.map(|n| n as usize).unwrap_or(auto_slots);
    // SAFETY: parent process, post_config, with the process pool as required.
    let outcome = unsafe { shm::find_or_create((*s.process).pool, nslots, nchildren) };
    match outcome {
        Ok(Outcome::Created(t)) => {
            log::notice(s, messages::TABLE_CREATED, &format!(
                "connection table created: {nslots} slots, {nchildren} child rows, {} bytes of shared memory",
                SharedTable::required_size(nslots, nchildren)
            ));
            Some(t)
        }
        Ok(Outcome::Reused(t)) => {
            let generation = t.header().generation.fetch_add(1, Relaxed) + 1;
            t.header().restart_mono_ms.store(mono_ms(), Relaxed);
            log::notice(s, messages::TABLE_REUSED, &format!(
                "restart: connection table kept ({nslots} slots), counters continue, generation {generation}"
            ));
            Some(t)
        }
        Ok(Outcome::Replaced(t, why)) => {
            log::warn(s, messages::TABLE_REPLACED, &format!(
                "restart: connection table replaced ({why}; now {nslots} slots): counters start again"
            ));
            Some(t)
        }
        Err(e) => {
            log::err(s, messages::TABLE_UNAVAILABLE, &format!(
                "cannot create the shared connection table ({e}): connections are served but not tracked"
            ));
            None
        }
    }
}

fn publish_settings(table: &SharedTable, main: &ServerConfig) {
    let h = table.header();
    h.scan_interval_ms.store(main.scan_interval_ms(), Relaxed);
    h.full_scan_interval_ms
        .store(main.full_scan_interval_ms(), Relaxed);
    h.hung_child_timeout_ms
        .store(main.hung_child_timeout_ms(), Relaxed);
    h.graceful_deadline_ms
        .store(main.graceful_deadline_ms(), Relaxed);
    h.rescue.store(main.rescue() as u32, Relaxed);
    h.server_stop_generation.store(0, Relaxed);
}

/// The ports of the configuration's `Listen` lines, in the order they appear (sections and
/// included files walked depth-first, as Apache read them).
fn listen_lines_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    // SAFETY: ap_conftree is the tree Apache built while reading the configuration; it lives
    // in the configuration pool, which outlives post_config, and nothing changes it while
    // hooks run. We only read names and arguments (NUL-terminated strings) from it.
    unsafe { collect_listen_ports(b::ap_conftree, 0, &mut ports) };
    ports
}

/// Walks `node`, its siblings and (up to a sane depth) their children for `Listen` lines.
///
/// # Safety
/// `node` is null or a node of Apache's configuration tree.
unsafe fn collect_listen_ports(mut node: *const b::ap_directive_t, depth: u32, out: &mut Vec<u16>) {
    const MAX_DEPTH: u32 = 64;
    // SAFETY: per the contract, every non-null node and its strings are valid.
    unsafe {
        while let Some(d) = node.as_ref() {
            if is_listen(d) {
                let args = conn::text(d.args);
                let first = args.split_ascii_whitespace().next().unwrap_or("");
                if let Some(port) = crate::kernel::listeners::listen_arg_port(first) {
                    out.push(port);
                }
            }
            if depth < MAX_DEPTH {
                collect_listen_ports(d.first_child, depth + 1, out);
            }
            node = d.next;
        }
    }
}

/// # Safety
/// `d.directive` is null or a NUL-terminated string.
unsafe fn is_listen(d: &b::ap_directive_t) -> bool {
    // SAFETY: per the contract.
    unsafe { conn::text(d.directive).eq_ignore_ascii_case("Listen") }
}

/// Records the listening ports the kernel view filters on. The table has room for
/// `MAX_LISTEN_PORTS` of them: the first ones of the configuration's `Listen` lines are
/// kept; the rest are named once in the error log (SG0028), since nothing on them is guarded.
fn publish_listeners(table: &SharedTable, s: &b::server_rec) {
    let mut listeners: Vec<(u16, bool)> = Vec::new();
    // SAFETY: ap_listeners is the MPM's list of listening sockets, set up (open_logs) before
    // post_config and not modified while hooks run; we only read addresses from it.
    unsafe {
        let mut lr = b::ap_listeners;
        while let Some(l) = lr.as_ref() {
            let ipv6 = l
                .bind_addr
                .as_ref()
                .is_some_and(|a| a.family == libc::AF_INET6);
            let entry = (conn::socket_addr(l.bind_addr).port(), ipv6);
            if entry.0 != 0 && !listeners.contains(&entry) {
                listeners.push(entry);
            }
            lr = l.next;
        }
    }
    crate::kernel::listeners::in_config_order(&mut listeners, &listen_lines_ports());
    let fitted = crate::kernel::listeners::fit(&listeners, MAX_LISTEN_PORTS);
    table.set_listeners(&fitted.entries);
    if !fitted.unguarded.is_empty() {
        let ports: Vec<String> = fitted.unguarded.iter().map(u16::to_string).collect();
        log::warn(s, messages::LISTENERS_UNGUARDED, &format!(
            "the server listens on more than {MAX_LISTEN_PORTS} ports: {} port(s) not guarded (no CLOSE_WAIT scan, AutoClose, rescue or kernel view on them): {}",
            ports.len(),
            ports.join(", ")
        ));
    }
}

/// Gives every server (main and vhosts) its row, keyed by `ServerName:port` so rows and their
/// counters are found again after a restart, and records its AutoClose settings there.
///
/// # Safety
/// `s` must head Apache's live server list; config time only (see
/// `server_conf::update_at_config_time`).
unsafe fn register_servers(table: &SharedTable, s: *const b::server_rec) {
    let mut full_logged = false;
    let mut cur = s;
    // SAFETY: per the contract; each server_rec and its config live for the generation.
    unsafe {
        while let Some(sr) = cur.as_ref() {
            let name = conn::text(sr.server_hostname);
            let name = if name.is_empty() {
                "(unnamed)".into()
            } else {
                name
            };
            let index = table.register_vhost(&name, server_port(sr, s));
            if index as usize == crate::table::layout::MAX_VHOSTS - 1 && !full_logged {
                full_logged = true;
                log::warn(
                    s,
                    messages::VHOSTS_FULL,
                    "more than 256 distinct servers: the rest are counted together in the last row",
                );
            }
            let conf = server_conf::update_at_config_time(cur, |conf| {
                conf.vhost_index = index;
                *conf
            });
            if let (Some(conf), Some(row)) = (conf, table.vhost(index)) {
                row.auto_close.store(conf.auto_close() as u32, Relaxed);
                row.close_wait_timeout_ms
                    .store(conf.close_wait_timeout_ms(), Relaxed);
                row.abandoned_timeout_ms
                    .store(conf.abandoned_timeout_ms(), Relaxed);
            }
            cur = sr.next;
        }
    }
}

/// The port a server answers on: ServerName's port, else its <VirtualHost> address's. The
/// main server has no address of its own: it answers on the listeners no <VirtualHost> claims,
/// so it gets the lowest such port (or the lowest listener if every port has a vhost).
///
/// # Safety
/// `sr` must be a live server_rec of the list headed by `main`.
unsafe fn server_port(sr: &b::server_rec, main: *const b::server_rec) -> u16 {
    if sr.port != 0 {
        return sr.port;
    }
    // SAFETY: per the contract; addrs is null or a live list, ap_listeners is set up.
    unsafe {
        if let Some(a) = sr.addrs.as_ref() {
            if a.host_port != 0 {
                return a.host_port;
            }
        }
        let mut listeners = Vec::new();
        let mut lr = b::ap_listeners;
        while let Some(l) = lr.as_ref() {
            listeners.push(conn::socket_addr(l.bind_addr).port());
            lr = l.next;
        }
        let mut claimed = Vec::new();
        let mut cur = (*main).next;
        while let Some(v) = cur.as_ref() {
            let mut a = v.addrs;
            while let Some(addr) = a.as_ref() {
                claimed.push(addr.host_port);
                a = addr.next;
            }
            cur = v.next;
        }
        listeners.sort_unstable();
        listeners
            .iter()
            .find(|p| !claimed.contains(p))
            .or(listeners.first())
            .copied()
            .unwrap_or(0)
    }
}

callback!(
    /// Child, once after fork: claim its child row, start its guard thread, and clean up when
    /// it exits.
    #[on_panic(())]
    pub fn child_init(pchild: *mut b::apr_pool_t, s: *mut b::server_rec) {
        let Some(table) = runtime::table() else {
            return;
        };
        pin_module_code();
        let pid = std::process::id();
        let start_time = crate::sys::procfs::stat(pid)
            .map(|st| st.start_time)
            .unwrap_or(0);
        let generation = table.header().generation.load(Relaxed);
        let row = table.claim_child(pid, generation, start_time, mono_ms());
        runtime::enter_child(pid, row);
        runtime::set_generation(generation);
        let threaded = mpm_query(b::AP_MPMQ_IS_THREADED) != b::AP_MPMQ_NOT_SUPPORTED;
        runtime::set_threaded(threaded);
        match row {
            Some(row) => start_guard_thread(
                s,
                table,
                Child {
                    pid,
                    row,
                    log: log::sink,
                    threaded,
                    generation,
                },
            ),
            None => log::warn(
                s,
                messages::CHILD_TABLE_FULL,
                &format!(
                "no free child row for pid {pid}: its guard does not run and it shows no check-ins"
            ),
            ),
        }
        // SAFETY: pchild lives until this child exits; the cleanup runs then, in this process.
        unsafe {
            b::apr_pool_cleanup_register(
                pchild,
                std::ptr::null(),
                Some(child_exit),
                Some(b::apr_pool_cleanup_null),
            )
        };
    }
);

/// Starts the child's guard thread (unless a benchmark asked for children without it).
fn start_guard_thread(s: *const b::server_rec, table: SharedTable, child: Child) {
    let (pid, generation) = (child.pid, child.generation);
    if bench_without_child_thread() {
        log::err(s, messages::GUARD_UNAVAILABLE, &format!(
            "guard thread not started in pid {pid}: {BENCH_NO_CHILD_THREAD}=1 is set (a benchmark setting, not for production)"
        ));
        return;
    }
    match guard::start(table, child, runtime::exiting_flag()) {
        Ok(()) => log::debug(
            s,
            messages::GUARD_STARTED,
            &format!("guard thread started in pid {pid} (generation {generation})"),
        ),
        Err(e) => log::err(s, messages::GUARD_UNAVAILABLE, &format!(
            "cannot start the guard thread in pid {pid} ({e}): connections are tracked but not scanned"
        )),
    }
}

/// Environment variable that starts children without their guard thread. For `make bench` only,
/// which measures what the thread costs per request: such a child does not check in (the guard
/// process would take it for hung), does not act on its own connections, and does not stop
/// abandoned work.
const BENCH_NO_CHILD_THREAD: &str = "SOCKET_GUARD_BENCH_NO_CHILD_THREAD";

fn bench_without_child_thread() -> bool {
    std::env::var_os(BENCH_NO_CHILD_THREAD).is_some_and(|v| v == "1")
}

/// Keeps this module's code mapped in the child until the process ends. The guard thread is
/// never joined (the exit path may not join), and an exiting child runs `apr_terminate` from
/// atexit, which unloads the modules (dlclose) while that thread may still wake up in our code:
/// without this, that rare wake-up is a SIGSEGV in an exiting child. Children only: the parent
/// must still be able to reload the module at a restart.
fn pin_module_code() {
    // SAFETY: dladdr fills `info` for an address inside this library; dlopen with RTLD_NOLOAD
    // only takes one more reference on the already loaded library (and marks it NODELETE).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let here = pin_module_code as *const std::ffi::c_void;
        if libc::dladdr(here, &mut info) != 0 && !info.dli_fname.is_null() {
            libc::dlopen(
                info.dli_fname,
                libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
            );
        }
    }
}

callback!(
    /// pchild cleanup: the child is exiting. Connection pools (sub-pools) are already gone, so what
    /// is still claimed here was never released; free it so it does not look open.
    ///
    /// Prefork runs this inside its SIGTERM/SIGHUP handler (`just_die` → `clean_child_exit`), which
    /// may have interrupted any code of this process, ours included. So this does only atomic
    /// loads and stores on the shared table: no lock, no allocation, no thread join, no log line
    /// (unit test `child_exit_is_async_signal_safe` holds it to that).
    #[on_panic(0, "child exit")]
    fn child_exit(_data: *mut c_void) -> b::apr_status_t {
        runtime::on_child_exit();
        0
    }
);

callback!(
    /// `child_stopping` (httpd 2.4.49+): the child is about to stop. `graceful == 0` is a stop or
    /// an ungraceful restart, where every request in flight is abandoned by definition and Apache
    /// kills the child 3 s later anyway: end the requests' CGIs now so the child can exit at once.
    ///
    /// Prefork calls this from `clean_child_exit`, often inside its SIGTERM handler: there only an
    /// atomic store happens (its parent signals the whole process group at a stop, CGIs included).
    /// Worker/event call it from the child's main thread, where blocking up to a second is fine.
    #[on_panic(())]
    pub fn child_stopping(_pchild: *mut b::apr_pool_t, graceful: c_int) {
        if graceful != 0 {
            return;
        }
        runtime::note_server_stop(mono_ms());
        if !runtime::threaded() {
            return;
        }
        if let Some(table) = runtime::table() {
            // Tell the older generation's children too (they no longer read the MPM's pipe).
            // Only worker/event: there graceful = 0 means an ungraceful stop of the child,
            // while prefork runs this at every child exit.
            let h = table.header();
            let generation = h.generation.load(Relaxed);
            if runtime::generation() == generation {
                h.server_stop_generation.store(generation + 1, Relaxed);
            }
            guard::stopper::stop_cgis_at_server_stop(
                &table,
                runtime::pid(),
                log::sink,
                std::time::Duration::from_millis(1000),
            );
        }
    }
);

callback!(
    /// Parent, about every 10 s: free the slots and rows of children that died (crash, SIGKILL,
    /// MaxConnectionsPerChild) so they never stay "open" on the status page.
    #[on_panic(DECLINED)]
    pub fn monitor(_p: *mut b::apr_pool_t, s: *mut b::server_rec) -> c_int {
        let Some(table) = runtime::table() else {
            return DECLINED;
        };
        let n = table.reclaim_dead(std::process::id(), crate::sys::procfs::is_alive);
        if n > 0 {
            log::notice(
                s,
                messages::SLOTS_RECLAIMED,
                &format!("reclaimed {n} connection slots of children that died"),
            );
        }
        DECLINED
    }
);
