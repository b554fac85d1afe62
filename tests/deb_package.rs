//! The Debian package (`make deb`) on this machine, as an administrator would use it:
//! `dpkg -i`, `a2enmod socket_guard`, `apache2ctl -t`, a real Apache from the system's layout
//! serving /socket-status with the packaged module and config, `a2dismod`, `dpkg -r`,
//! `dpkg -P`, and nothing of the package left behind. Needs root (dpkg), as CI has.
//!
//! The system's apache2 service is never started or restarted: a policy-rc.d forbids it while
//! dpkg runs (the maintainer scripts would restart it), and the test's own server reads only
//! mods-enabled from /etc/apache2 (tests/common/system.rs). The package is purged even when
//! the test fails (`dpkg::Installed`).

mod common;
#[path = "common/dpkg.rs"]
mod dpkg;

use common::{poll, proc_stat, Apache, Opts};
use dpkg::{dpkg_ok, field, run_ok, status, PACKAGE};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MODULE: &str = "/usr/lib/apache2/modules/mod_socket_guard.so";
const LOAD: &str = "/etc/apache2/mods-available/socket_guard.load";
const CONF: &str = "/etc/apache2/mods-available/socket_guard.conf";
/// What a2enmod creates and a2dismod removes (not files of the package).
const ENABLED: [&str; 2] = [
    "/etc/apache2/mods-enabled/socket_guard.load",
    "/etc/apache2/mods-enabled/socket_guard.conf",
];

#[test]
fn package_installs_serves_and_purges() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "installs a package: run as root (make test-deb)"
    );
    let deb = dpkg::deb_path();
    let contents = dpkg::deb_contents(&deb);
    let existed: Vec<PathBuf> = contents.iter().filter(|p| p.exists()).cloned().collect();
    let system_apache = dpkg::system_apache_pid();

    let installed = dpkg::Installed::install(&deb, &contents);
    let listed = check_installed(&contents);
    enable_and_configtest();
    serve_status_page();
    disable_remove_purge();
    check_nothing_left(&listed, &existed);
    drop(installed);
    assert_eq!(
        dpkg::system_apache_pid(),
        system_apache,
        "the system's apache2 was started or restarted (its pid file changed)"
    );
}

/// dpkg's view after `dpkg -i`: version, dependencies, file list; and the module enabled by
/// the postinst (dh_apache2's apache2_invoke enmod). Returns `dpkg -L`.
fn check_installed(contents: &[PathBuf]) -> Vec<PathBuf> {
    assert_eq!(status(), "installed");
    let version = field("Version");
    assert!(
        version.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))),
        "package version {version} is not Cargo.toml's {}",
        env!("CARGO_PKG_VERSION")
    );
    let listed: Vec<PathBuf> = run_ok("dpkg", &["-L", PACKAGE])
        .lines()
        .map(PathBuf::from)
        .filter(|p| p != Path::new("/."))
        .collect();
    assert_eq!(
        sorted(&listed),
        sorted(contents),
        "dpkg -L differs from the .deb's contents"
    );
    for f in [MODULE, LOAD, CONF] {
        assert!(
            listed.contains(&PathBuf::from(f)),
            "the package does not install {f}: {listed:?}"
        );
    }
    for link in ENABLED {
        assert!(
            Path::new(link).is_symlink(),
            "{link} missing: the postinst did not enable the module"
        );
    }
    let depends = field("Depends");
    let api = run_ok("dpkg-query", &["-W", "-f=${Provides}", "apache2-bin"]);
    let api = api
        .split(", ")
        .find(|p| p.starts_with("apache2-api-2"))
        .unwrap_or("?");
    assert!(
        depends.split(", ").any(|d| d == api),
        "Depends: {depends} lacks the {api} that the installed apache2-bin provides"
    );
    listed
}

/// `a2enmod socket_guard` (already enabled by the postinst: it must say so and succeed) and
/// the system's configuration with the module passes `apache2ctl -t` (which starts nothing).
fn enable_and_configtest() {
    let out = run_ok("a2enmod", &["socket_guard"]);
    assert!(
        out.contains("already enabled"),
        "a2enmod socket_guard: {out}"
    );
    let out = run_ok("apache2ctl", &["-t"]);
    assert!(out.contains("Syntax OK"), "apache2ctl -t: {out}");
}

/// An Apache from the system layout serves the module's page from the packaged module and
/// the packaged `<Location>`; it is then stopped by its pid file.
fn serve_status_page() {
    let mut server = Apache::start(Opts::system_layout());
    assert!(
        !server.conf_text().contains("socket"),
        "the generated config must leave the module and its Location to the package"
    );
    let r = server.get("/socket-status");
    assert_eq!(r.status, 200, "GET /socket-status: {}", r.text());
    assert!(
        r.content_type().starts_with("text/html"),
        "{}",
        r.content_type()
    );
    assert!(
        r.text().contains("<title>Socket Guard Status</title>"),
        "{}",
        r.text()
    );
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid())).unwrap();
    assert!(maps.contains(MODULE), "the server did not map {MODULE}");

    let pidfile = server.dir.path.join("run/apache2.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, server.pid(), "pid file");
    // SAFETY: kill(2) on the Apache parent this test started (its pid file says so).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    poll(
        Duration::from_secs(10),
        "apache2 to exit on SIGTERM",
        || match proc_stat(pid).map(|s| s.state) {
            None | Some('Z') if !pidfile.exists() => Ok(()),
            state => Err(format!(
                "state {state:?}, pid file there: {}",
                pidfile.exists()
            )),
        },
    );
    server.stop(); // reaps it (and would kill any straggler in its process group)
}

/// `a2dismod`, `dpkg -r` (conffiles stay), `dpkg -P`.
fn disable_remove_purge() {
    run_ok("a2dismod", &["socket_guard"]);
    for link in ENABLED {
        assert!(
            !Path::new(link).is_symlink(),
            "{link} still there after a2dismod"
        );
    }
    dpkg_ok(&["-r", PACKAGE]);
    assert_eq!(status(), "config-files");
    assert!(
        !Path::new(MODULE).exists(),
        "{MODULE} still there after dpkg -r"
    );
    assert!(
        Path::new(CONF).exists(),
        "dpkg -r must keep the conffile {CONF}"
    );
    dpkg_ok(&["-P", PACKAGE]);
    assert_eq!(status(), "not-installed");
}

/// Every path `dpkg -L` listed is gone after the purge, except directories that existed
/// before the install; no a2enmod link, state file or dpkg backup of the config is left.
fn check_nothing_left(listed: &[PathBuf], existed: &[PathBuf]) {
    let left: Vec<&PathBuf> = listed
        .iter()
        .filter(|p| p.symlink_metadata().is_ok() && !(existed.contains(p) && p.is_dir()))
        .collect();
    assert!(left.is_empty(), "left after dpkg -P: {left:?}");
    let mut stray: Vec<PathBuf> = ENABLED.iter().map(PathBuf::from).collect();
    for state in [
        "enabled_by_maint",
        "enabled_by_admin",
        "disabled_by_maint",
        "disabled_by_admin",
    ] {
        stray.push(
            Path::new("/var/lib/apache2/module")
                .join(state)
                .join("socket_guard"),
        );
    }
    stray.extend(
        std::fs::read_dir("/etc/apache2/mods-available")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("socket_guard"))
            }),
    );
    let stray: Vec<&PathBuf> = stray
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    assert!(stray.is_empty(), "left after dpkg -P: {stray:?}");
}

fn sorted(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut v = paths.to_vec();
    v.sort();
    v
}
