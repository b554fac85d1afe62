//! Integration-test harness: starts real `apache2` processes with generated configs on
//! 127.0.0.1 and random free ports, and talks to them over real TCP.
//!
//! Every server is owned by an `Apache` value; dropping it (also while unwinding from a failed
//! assertion) stops the server: SIGTERM to the parent pid we started, a bounded wait, then
//! SIGKILL to its process group (the parent is started as the leader of its own group, so the
//! group id is the pid we started and never anybody else's). As a last resort, the parent also
//! gets `PR_SET_PDEATHSIG(SIGTERM)`, so it shuts down if the test thread that started it dies
//! without running destructors.
//!
//! Environment:
//! - `SOCKET_GUARD_SO`: absolute path of the module to load; falls back to
//!   `<crate>/build/mod_socket_guard.so`, then `<crate>/target/release/libmod_socket_guard.so`.
//! - `KEEP_TEST_DIRS`: keep each server's temp dir (config, error.log) after the test.
//! - `APACHE2`: the httpd binary (default `/usr/sbin/apache2`).

#![allow(dead_code)]

pub mod http;
pub mod json;
pub mod status;
pub mod system;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use http::{Conn, Response};
pub use status::StatusAuto;

pub const MODULES_DIR: &str = "/usr/lib/apache2/modules";
const START_DEADLINE: Duration = Duration::from_secs(15);
const STOP_DEADLINE: Duration = Duration::from_secs(10);
pub const LARGE_FILE_SIZE: usize = 4 * 1024 * 1024;

/// The client port of a JSON connection row (`"client": "ip:port"`).
#[allow(dead_code)] // not every test file uses every helper
pub fn client_port_of(row: &json::Value) -> Option<u16> {
    row.get("client")?
        .as_str()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

pub fn apache_bin() -> String {
    std::env::var("APACHE2").unwrap_or_else(|_| "/usr/sbin/apache2".to_string())
}

/// Generates one `#[test]` per MPM for a scenario `fn name(mpm: Mpm)`, inside `mod name`,
/// so the test names read `name::prefork`, `name::worker`, `name::event`.
#[macro_export]
macro_rules! mpm_tests {
    ($scenario:ident) => {
        $crate::mpm_tests!($scenario: prefork, worker, event);
    };
    ($scenario:ident : $($mpm:ident),+ $(,)?) => {
        mod $scenario {
            $(
                #[test]
                fn $mpm() {
                    super::$scenario($crate::common::Mpm::from_name(stringify!($mpm)));
                }
            )+
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpm {
    Prefork,
    Worker,
    Event,
}

impl Mpm {
    pub fn from_name(name: &str) -> Mpm {
        match name {
            "prefork" => Mpm::Prefork,
            "worker" => Mpm::Worker,
            "event" => Mpm::Event,
            _ => panic!("unknown MPM {name}"),
        }
    }

    /// The name Apache reports (and `ServerMPM:` should show).
    pub fn name(self) -> &'static str {
        match self {
            Mpm::Prefork => "prefork",
            Mpm::Worker => "worker",
            Mpm::Event => "event",
        }
    }

    fn module_line(self) -> String {
        format!(
            "LoadModule mpm_{0}_module {MODULES_DIR}/mod_mpm_{0}.so",
            self.name()
        )
    }

    /// Small sizes so tests stay light.
    pub fn default_tuning(self) -> &'static str {
        match self {
            Mpm::Prefork => {
                "StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\nServerLimit 32\nMaxRequestWorkers 32\n"
            }
            Mpm::Worker | Mpm::Event => {
                "StartServers 2\nServerLimit 4\nThreadLimit 64\nThreadsPerChild 8\nMinSpareThreads 8\nMaxSpareThreads 16\nMaxRequestWorkers 32\n"
            }
        }
    }
}

/// What to start. Text fields may use placeholders: `@PORT@` (main port), `@PORT1@`,
/// `@PORT2@`, ... (extra ports), `@DIR@` (the server's temp dir), `@DOCROOT@`.
#[derive(Clone, Debug)]
pub struct Opts {
    pub mpm: Mpm,
    /// LoadModule socket_guard_module (and the /socket-status Location).
    pub load_module: bool,
    /// Load mod_status and map /server-status.
    pub mod_status: bool,
    /// Extra global config (main server context), after the defaults.
    pub global: String,
    /// Extra config appended at the end (typically `<VirtualHost>` blocks).
    pub vhosts: String,
    /// Replaces the MPM sizing block (`Mpm::default_tuning`).
    pub tuning: Option<String>,
    /// Additional ports to `Listen` on (`@PORT1@`...).
    pub extra_ports: usize,
    /// Start apache2 as this (uid, gid) instead of root (no `User`/`Group` then): a non-root
    /// Apache, as an ordinary user runs it on a high port. The server dir is chowned to it.
    pub run_as: Option<(u32, u32)>,
    /// Start apache2 without CAP_SYS_PTRACE in its bounding set (as `capsh --drop` would):
    /// no process of the server can ever have it.
    pub drop_ptrace: bool,
    /// Run from the system's layout (`-d /etc/apache2`): the modules and their config come
    /// from its mods-enabled/*.load and *.conf (an installed package's), not from the
    /// harness's LoadModule lines; see `system::render_system_config`.
    pub system_layout: bool,
}

impl Opts {
    pub fn new(mpm: Mpm) -> Opts {
        Opts {
            mpm,
            load_module: true,
            mod_status: false,
            global: String::new(),
            vhosts: String::new(),
            tuning: None,
            extra_ports: 0,
            run_as: None,
            drop_ptrace: false,
            system_layout: false,
        }
    }
    /// A server from the system's layout: see `Opts::system_layout` (`mpm` is what
    /// mods-enabled says; `tuning`, `mod_status` and `load_module` do not apply).
    pub fn system_layout() -> Opts {
        Opts {
            system_layout: true,
            ..Opts::new(Mpm::Event)
        }
    }
    pub fn without_ptrace(mut self) -> Opts {
        self.drop_ptrace = true;
        self
    }
    pub fn run_as(mut self, uid: u32, gid: u32) -> Opts {
        self.run_as = Some((uid, gid));
        self
    }
    pub fn global(mut self, text: &str) -> Opts {
        self.global.push_str(text);
        self.global.push('\n');
        self
    }
    pub fn vhosts(mut self, text: &str) -> Opts {
        self.vhosts.push_str(text);
        self.vhosts.push('\n');
        self
    }
    pub fn tuning(mut self, text: &str) -> Opts {
        self.tuning = Some(text.to_string());
        self
    }
    pub fn extra_ports(mut self, n: usize) -> Opts {
        self.extra_ports = n;
        self
    }
    pub fn with_mod_status(mut self) -> Opts {
        self.mod_status = true;
        self
    }
    pub fn without_module(mut self) -> Opts {
        self.load_module = false;
        self
    }
}

/// The module under test.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("SOCKET_GUARD_SO") {
        let p = PathBuf::from(p);
        assert!(
            p.is_absolute(),
            "SOCKET_GUARD_SO must be an absolute path, got {}",
            p.display()
        );
        assert!(p.exists(), "SOCKET_GUARD_SO={} does not exist", p.display());
        return p;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for cand in [
        root.join("build/mod_socket_guard.so"),
        root.join("target/release/libmod_socket_guard.so"),
    ] {
        if cand.exists() {
            return cand;
        }
    }
    panic!(
        "mod_socket_guard not built: set SOCKET_GUARD_SO, or build {}/build/mod_socket_guard.so \
         (make) or target/release/libmod_socket_guard.so (cargo build --release)",
        root.display()
    );
}

/// A temp dir removed on drop unless `KEEP_TEST_DIRS` is set.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for _ in 0..100 {
            let name = format!(
                "sg-test-{tag}-{}-{}-{nanos:x}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            );
            let path = std::env::temp_dir().join(name);
            if fs::create_dir(&path).is_ok() {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
                return TempDir { path };
            }
        }
        panic!(
            "could not create a temp dir under {}",
            std::env::temp_dir().display()
        );
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_some() {
            eprintln!("[harness] keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Picks a port that is free right now (bind 127.0.0.1:0 and release it).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Picks `n` distinct ports that are free right now. Every listener is held until all are
/// picked: released one by one, the kernel may hand the same port out twice, and Apache
/// refuses a config that listens twice on one port (seen: "Cannot define multiple Listeners
/// on the same IP:port" with 35 ports).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn write_file(path: &Path, content: &[u8], mode: u32) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Lays out docroot and run dir in `dir` and returns the config text.
fn prepare_dir(dir: &Path, opts: &Opts, ports: &[u16]) -> String {
    let docroot = dir.join("htdocs");
    let run = dir.join("run");
    for d in [&docroot, &run] {
        fs::create_dir_all(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    write_file(
        &docroot.join("index.html"),
        b"<html><body>socket guard test</body></html>\n",
        0o644,
    );
    write_file(&docroot.join("small.txt"), b"hello\n", 0o644);
    let large = dir.join("htdocs/large.bin");
    if !large.exists() {
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut content = Vec::with_capacity(LARGE_FILE_SIZE);
        while content.len() < LARGE_FILE_SIZE {
            content.extend_from_slice(&chunk);
        }
        write_file(&large, &content, 0o644);
    }
    if opts.system_layout {
        system::render_system_config(dir, opts, ports)
    } else {
        render_config(dir, opts, ports)
    }
}

fn substitute(text: &str, dir: &Path, ports: &[u16]) -> String {
    let mut t = text.replace("@DIR@", &dir.display().to_string());
    t = t.replace("@DOCROOT@", &dir.join("htdocs").display().to_string());
    // Highest index first so @PORT1@ does not eat the prefix of @PORT10@.
    for (i, p) in ports.iter().enumerate().skip(1).rev() {
        t = t.replace(&format!("@PORT{i}@"), &p.to_string());
    }
    t.replace("@PORT@", &ports[0].to_string())
}

pub fn render_config(dir: &Path, opts: &Opts, ports: &[u16]) -> String {
    let d = dir.display().to_string();
    let mut c = String::new();
    c.push_str("# generated by tests/common/mod.rs\n");
    c.push_str(&format!("ServerRoot \"{d}\"\n"));
    c.push_str(&format!("DefaultRuntimeDir \"{d}/run\"\n"));
    c.push_str(&format!("PidFile \"{d}/run/apache2.pid\"\n"));
    c.push_str(&opts.mpm.module_line());
    c.push('\n');
    for m in ["authz_core", "authz_host", "mime", "dir", "alias"] {
        c.push_str(&format!("LoadModule {m}_module {MODULES_DIR}/mod_{m}.so\n"));
    }
    if opts.mod_status {
        c.push_str(&format!(
            "LoadModule status_module {MODULES_DIR}/mod_status.so\n"
        ));
    }
    if opts.load_module {
        c.push_str(&format!(
            "LoadModule socket_guard_module \"{}\"\n",
            module_path().display()
        ));
    }
    if nix_euid() == 0 && opts.run_as.is_none() {
        c.push_str("User www-data\nGroup www-data\n");
    }
    for p in ports {
        c.push_str(&format!("Listen 127.0.0.1:{p}\n"));
    }
    c.push_str("ServerName 127.0.0.1\n");
    c.push_str(&format!("ErrorLog \"{d}/error.log\"\n"));
    if opts.load_module {
        c.push_str("LogLevel warn socket_guard:debug\n");
    } else {
        c.push_str("LogLevel warn\n");
    }
    c.push_str("TypesConfig /etc/mime.types\n");
    c.push_str(&format!("DocumentRoot \"{d}/htdocs\"\n"));
    c.push_str(&format!(
        "<Directory \"{d}/htdocs\">\n    Require all granted\n</Directory>\n"
    ));
    c.push_str("DirectoryIndex index.html\n");
    c.push_str("KeepAlive On\nKeepAliveTimeout 30\nMaxKeepAliveRequests 1000\nTimeout 30\n");
    c.push_str(opts.tuning.as_deref().unwrap_or(opts.mpm.default_tuning()));
    c.push('\n');
    if opts.load_module {
        c.push_str("<Location \"/socket-status\">\n    SetHandler socket-status\n    Require all granted\n</Location>\n");
    }
    if opts.mod_status {
        c.push_str("<Location \"/server-status\">\n    SetHandler server-status\n    Require all granted\n</Location>\n");
    }
    if !opts.global.is_empty() {
        c.push_str("# --- test global config ---\n");
        c.push_str(&substitute(&opts.global, dir, ports));
        c.push('\n');
    }
    if !opts.vhosts.is_empty() {
        c.push_str("# --- test vhosts ---\n");
        c.push_str(&substitute(&opts.vhosts, dir, ports));
        c.push('\n');
    }
    c
}

/// chown -R (the tree of a test server dir).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

fn nix_euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Runs `apache2 <args> -f <conf>` on a config generated from `opts` (no server is started).
/// Returns (exit success, stdout + stderr).
pub fn apache_cmd(opts: &Opts, args: &[&str]) -> (bool, String) {
    let dir = TempDir::new("cfg");
    let ports = free_ports(opts.extra_ports + 1);
    let conf = prepare_dir(&dir.path, opts, &ports);
    let conf_path = dir.path.join("httpd.conf");
    write_file(&conf_path, conf.as_bytes(), 0o644);
    let out = Command::new(apache_bin())
        .args(args)
        .arg("-f")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", apache_bin()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `apache2 -t` on a config generated from `opts`.
pub fn configtest(opts: &Opts) -> (bool, String) {
    apache_cmd(opts, &["-t"])
}

/// Polls `f` every `every` until it returns `Ok`, or panics after `timeout` with the last error.
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    let mut every = Duration::from_millis(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last: {e}");
                }
            }
        }
        std::thread::sleep(every);
        every = (every * 2).min(Duration::from_millis(200));
    }
}

/// How long `wait_guard_passes`/`wait_scans` wait for each step: passes come every scan
/// interval (200 ms in the guard tests, 1 s by default), more on a loaded machine.
fn guard_wait(passes: u32) -> Duration {
    Duration::from_secs(5) + passes * Duration::from_secs(1)
}

/// A running Apache.
pub struct Apache {
    pub opts: Opts,
    pub dir: TempDir,
    pub ports: Vec<u16>,
    child: Option<Child>,
    pid: i32,
}

impl Apache {
    /// Starts a server and waits until it accepts on its main port and wrote its pid file.
    /// Retries with fresh ports if a port was taken in between.
    pub fn start(opts: Opts) -> Apache {
        let mut last = String::new();
        for _attempt in 0..3 {
            match Apache::try_start(opts.clone()) {
                Ok(a) => return a,
                Err((msg, port_clash)) => {
                    if !port_clash {
                        panic!("{msg}");
                    }
                    last = msg;
                }
            }
        }
        panic!("apache2 did not start after 3 attempts (ports in use?):\n{last}");
    }

    fn try_start(opts: Opts) -> Result<Apache, (String, bool)> {
        let dir = TempDir::new(opts.mpm.name());
        let ports = free_ports(opts.extra_ports + 1);
        let conf = prepare_dir(&dir.path, &opts, &ports);
        let conf_path = dir.path.join("httpd.conf");
        write_file(&conf_path, conf.as_bytes(), 0o644);
        let stderr_path = dir.path.join("stderr.log");
        let stderr = fs::File::create(&stderr_path).unwrap();
        let stdout = stderr.try_clone().unwrap();
        let mut cmd = Command::new(apache_bin());
        if let Some((uid, gid)) = opts.run_as {
            chown_tree(&dir.path, uid, gid);
            cmd.uid(uid).gid(gid);
        }
        if opts.system_layout {
            system::prepare_command(&mut cmd, &dir.path);
        }
        cmd.arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let drop_ptrace = opts.drop_ptrace;
        // SAFETY: the pre_exec closure only calls prctl(2), which is async-signal-safe, as
        // required between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if drop_ptrace {
                    // CAP_SYS_PTRACE is 19.
                    libc::prctl(libc::PR_CAPBSET_DROP, 19, 0, 0, 0);
                }
                // Safety net only: stop the server if the thread that started it dies.
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| (format!("spawn {}: {e}", apache_bin()), false))?;
        let pid = child.id() as i32;
        let mut a = Apache {
            opts,
            dir,
            ports,
            child: Some(child),
            pid,
        };
        let deadline = Instant::now() + START_DEADLINE;
        let pidfile = a.dir.path.join("run/apache2.pid");
        loop {
            if let Some(status) = a.child.as_mut().unwrap().try_wait().ok().flatten() {
                let msg = format!(
                    "apache2 exited during startup ({status}).\n--- config ---\n{}\n--- stderr ---\n{}\n--- error.log ---\n{}",
                    conf,
                    fs::read_to_string(&stderr_path).unwrap_or_default(),
                    a.error_log()
                );
                let clash = msg.contains("Address already in use");
                a.child = None; // already reaped; nothing to stop
                return Err((msg, clash));
            }
            let ready = pidfile.exists() && Conn::connect(a.ports[0]).is_ok();
            if ready {
                let recorded = fs::read_to_string(&pidfile).unwrap_or_default();
                if recorded.trim() == pid.to_string() {
                    break;
                }
            }
            if Instant::now() > deadline {
                let msg = format!(
                    "apache2 (pid {pid}) not ready after {START_DEADLINE:?}.\n--- stderr ---\n{}\n--- error.log ---\n{}",
                    fs::read_to_string(&stderr_path).unwrap_or_default(),
                    a.error_log()
                );
                drop(a);
                return Err((msg, false));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(a)
    }

    /// The parent's pid (the process we started).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Extra port `i` (1-based, matching `@PORT<i>@`).
    pub fn extra_port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port(), path)
    }

    pub fn conf_text(&self) -> String {
        fs::read_to_string(self.dir.path.join("httpd.conf")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path.join("error.log")).unwrap_or_default()
    }

    /// Last `n` lines of the error log (for assertion messages).
    pub fn error_log_tail(&self, n: usize) -> String {
        let log = self.error_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// One request on a fresh connection (`Connection: close`) to port `port`.
    pub fn request_on(
        &self,
        port: u16,
        method: &str,
        path: &str,
        host: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut c = Conn::connect(port)?;
        c.send_request(method, path, host, false, &[], body)?;
        c.read_response(method == "HEAD")
    }

    /// GET on a fresh connection to the main port; panics on I/O errors.
    pub fn get(&self, path: &str) -> Response {
        self.request_on(self.port(), "GET", path, None, b"")
            .unwrap_or_else(|e| {
                panic!(
                    "GET {path}: {e}\n--- error.log tail ---\n{}",
                    self.error_log_tail(40)
                )
            })
    }

    pub fn get_with_host(&self, path: &str, host: &str) -> Response {
        self.request_on(self.port(), "GET", path, Some(host), b"")
            .unwrap_or_else(|e| {
                panic!(
                    "GET {path} (Host {host}): {e}\n--- error.log tail ---\n{}",
                    self.error_log_tail(40)
                )
            })
    }

    pub fn request(&self, method: &str, path: &str) -> Response {
        self.request_on(self.port(), method, path, None, b"")
            .unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: {e}\n--- error.log tail ---\n{}",
                    self.error_log_tail(40)
                )
            })
    }

    fn try_status_auto(&self) -> Result<StatusAuto, String> {
        let r = self
            .request_on(self.port(), "GET", "/socket-status?auto", None, b"")
            .map_err(|e| format!("GET /socket-status?auto: {e}"))?;
        if r.status != 200 {
            return Err(format!(
                "GET /socket-status?auto -> {}: {}",
                r.status,
                json::truncate(&r.text(), 500)
            ));
        }
        Ok(StatusAuto::parse(&r.text()))
    }

    /// GET /socket-status?auto (one new connection, one request), parsed.
    pub fn status_auto(&self) -> StatusAuto {
        self.try_status_auto()
            .unwrap_or_else(|e| panic!("{e}\n--- error.log tail ---\n{}", self.error_log_tail(40)))
    }

    /// GET /socket-status?json&all (one new connection, one request), parsed. `all`: tests
    /// look for their own connections' rows, which the default page (100 rows besides those
    /// that need attention) may leave out.
    pub fn status_json(&self) -> json::Value {
        self.status_json_query("json&all")
    }

    /// GET /socket-status?<args> (a JSON query), parsed.
    pub fn status_json_query(&self, args: &str) -> json::Value {
        let r = self.get(&format!("/socket-status?{args}"));
        assert_eq!(r.status, 200, "GET /socket-status?{args}: {}", r.text());
        json::parse(&r.text()).unwrap_or_else(|e| {
            panic!(
                "/socket-status?json is not well-formed JSON: {e}\n{}",
                json::truncate(&r.text(), 4000)
            )
        })
    }

    /// Polls `?auto` until `cond` accepts it.
    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&StatusAuto) -> Result<(), String>,
    ) -> StatusAuto {
        let mut last_page = String::new();
        let deadline = Instant::now() + timeout;
        let mut every = Duration::from_millis(20);
        loop {
            let err = match self.try_status_auto() {
                Ok(s) => match cond(&s) {
                    Ok(()) => return s,
                    Err(e) => {
                        last_page = s.raw.clone();
                        e
                    }
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}: {err}\n--- last ?auto ---\n{last_page}\n--- error.log tail ---\n{}",
                    self.error_log_tail(40)
                );
            }
            std::thread::sleep(every);
            every = (every * 2).min(Duration::from_millis(200));
        }
    }

    /// Waits until the module has had `passes` complete chances to act since this call: every
    /// listed child's guard thread finished `passes` more passes and the scanner `passes` more
    /// scans. What tests wait on before checking that something did NOT happen (a repeat, a
    /// close on an `Off` vhost): a fixed sleep can end on a loaded machine before the guard
    /// looked at all. A pass begins with the child's check-in (`CheckinAgeMs`), so `passes + 1`
    /// check-ins are waited for. A child whose guard stopped checking in fails the wait (use
    /// `wait_scans` where children are stopped on purpose).
    pub fn wait_guard_passes(&self, passes: u32) {
        let scans = self.wait_scans_from(passes);
        for pass in 0..=passes {
            let mark = Instant::now();
            poll(
                guard_wait(passes),
                &format!("guard pass {pass} of {passes}"),
                || {
                    // Measured before the request: a check-in younger than this came after `mark`.
                    let since = mark.elapsed().as_millis() as u64;
                    let s = self.try_status_auto()?;
                    let late: Vec<String> = s
                        .children()
                        .into_iter()
                        .filter(|c| c.num("CheckinAgeMs") + 1 >= since)
                        .map(|c| c.raw)
                        .collect();
                    if late.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("{since} ms after the mark: {late:?}"))
                    }
                },
            );
        }
        self.wait_scans_to(scans, passes);
    }

    /// Waits until the scanner (the guard process, or an elected child) finished `passes` more
    /// scans: for decisions the guard process makes (leaked sockets, hung children). `Scans`
    /// counts a scan as it begins, so `passes + 1` are waited for.
    pub fn wait_scans(&self, passes: u32) {
        let scans = self.wait_scans_from(passes);
        self.wait_scans_to(scans, passes);
    }

    fn wait_scans_from(&self, passes: u32) -> u64 {
        self.status_auto().num("Scans") + u64::from(passes) + 1
    }

    fn wait_scans_to(&self, scans: u64, passes: u32) {
        self.wait_status(
            guard_wait(passes),
            &format!("Scans to reach {scans}"),
            |s| match s.num("Scans") {
                n if n >= scans => Ok(()),
                n => Err(format!("Scans={n}")),
            },
        );
    }

    /// `wait_guard_passes` once `horizon` has come: for a check that something does not happen
    /// by a later step (a SIGKILL `GRACE_MS` after a SIGTERM), the passes prove that the guard
    /// really looked after that moment, which sleeping until it alone does not.
    pub fn wait_guard_passes_after(&self, horizon: Instant, passes: u32) {
        std::thread::sleep(horizon.saturating_duration_since(Instant::now()));
        self.wait_guard_passes(passes);
    }

    /// SIGUSR1 to the parent; waits until `RestartGeneration:` increases. Returns the new value.
    pub fn graceful_restart(&self) -> u64 {
        let before = self.status_auto().num("RestartGeneration");
        // SAFETY: kill(2) on the Apache parent this harness started; no memory effects.
        let rc = unsafe { libc::kill(self.pid, libc::SIGUSR1) };
        assert_eq!(rc, 0, "kill(SIGUSR1, {}) failed", self.pid);
        let s = self.wait_status(
            Duration::from_secs(15),
            "RestartGeneration to increase",
            |s| {
                let g = s
                    .get("RestartGeneration")
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or("no RestartGeneration")?;
                if g > before {
                    Ok(())
                } else {
                    Err(format!("RestartGeneration still {g} (was {before})"))
                }
            },
        );
        s.num("RestartGeneration")
    }

    /// Pids whose parent is our server's parent process.
    pub fn child_pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir("/proc") else {
            return out;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(st) = proc_stat(pid) {
                if st.ppid == self.pid && st.state != 'Z' {
                    out.push(pid);
                }
            }
        }
        out.sort();
        out
    }

    /// Number of open descriptors of the parent process.
    pub fn parent_fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|rd| rd.count())
            .unwrap_or_else(|e| panic!("read /proc/{}/fd: {e}", self.pid))
    }

    /// Number of writable shared (`rw-s`) mappings of the parent process: shared memory
    /// segments (SysV, /dev/zero, memfd, deleted files, shm files...).
    pub fn parent_shm_mappings(&self) -> usize {
        let maps = fs::read_to_string(format!("/proc/{}/maps", self.pid))
            .unwrap_or_else(|e| panic!("read /proc/{}/maps: {e}", self.pid));
        maps.lines()
            .filter(|l| {
                let perms = l.split_whitespace().nth(1).unwrap_or("");
                perms.len() == 4 && perms.starts_with("rw") && perms.ends_with('s')
            })
            .count()
    }

    /// The parent's rw-s mapping lines (for failure messages).
    pub fn parent_shm_mapping_lines(&self) -> String {
        fs::read_to_string(format!("/proc/{}/maps", self.pid))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .map(|p| p.starts_with("rw") && p.ends_with('s'))
                    .unwrap_or(false)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The parent's fd targets (for failure messages).
    pub fn parent_fd_targets(&self) -> String {
        let mut v: Vec<String> = fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        format!(
                            "{} -> {}",
                            e.file_name().to_string_lossy(),
                            fs::read_link(e.path())
                                .map(|p| p.display().to_string())
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.join("\n")
    }

    /// Is the process still alive (and not a zombie)?
    pub fn is_running(&self) -> bool {
        proc_stat(self.pid).map(|s| s.state != 'Z').unwrap_or(false)
    }

    /// Stops the server now (also done on drop).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid;
        // SAFETY: kill(2) on the Apache parent this harness started; no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        // Wait for the parent to exit without reaping it, so the process group id stays ours
        // while we clean up any stragglers in the group.
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            // SAFETY: siginfo_t is plain data for which all-zero is valid; waitid writes into our
            // local `info`; si_pid() reads a field waitid filled for an exited child.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            let exited = rc == 0 && unsafe { info.si_pid() } == pid;
            if exited || rc != 0 || Instant::now() > deadline {
                if !exited && rc == 0 {
                    eprintln!("[harness] apache2 pid {pid} ignored SIGTERM for {STOP_DEADLINE:?}; SIGKILL to its group");
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The group leader is not reaped yet, so -pid is still our group.
        // SAFETY: kill(2) on our own process group (the parent is not reaped yet, so the group
        // id cannot have been reused); no memory effects.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[harness] test failed; server dir {} (set KEEP_TEST_DIRS=1 to keep it)\n--- error.log tail ---\n{}",
                self.dir.path.display(),
                self.error_log_tail(60)
            );
        }
        self.stop();
    }
}

pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgrp = it.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

/// Sum of a set of numeric `?auto` keys.
pub fn sum_keys(s: &StatusAuto, keys: &[&str]) -> u64 {
    keys.iter().map(|k| s.num(k)).sum()
}

/// Opens `n` connections that each send one keep-alive GET of `path` and read the response;
/// the connections stay open.
pub fn hold_keepalive(port: u16, n: usize, path: &str, host: Option<&str>) -> Vec<Conn> {
    let mut conns: Vec<Conn> = (0..n)
        .map(|i| Conn::connect(port).unwrap_or_else(|e| panic!("connect #{i} to {port}: {e}")))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send_request("GET", path, host, true, &[], b"")
            .unwrap_or_else(|e| panic!("send on connection #{i}: {e}"));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("response on connection #{i}: {e}"));
        assert_eq!(r.status, 200, "GET {path} on held connection #{i}");
        assert!(
            !r.header("Connection")
                .map(|v| v.eq_ignore_ascii_case("close"))
                .unwrap_or(false),
            "server refused keep-alive on connection #{i}"
        );
    }
    conns
}

/// Map of `?auto` values (convenience for callers that want a plain map).
pub fn auto_map(s: &StatusAuto) -> HashMap<String, String> {
    s.kv.clone()
}
