//! Helpers for tests/deb_package.rs: the package file under test, dpkg and a2enmod commands,
//! and `Installed`, which purges the package when dropped (also while unwinding from a failed
//! assertion), so the machine is left as it was.
//!
//! Included with `#[path = "common/dpkg.rs"] mod dpkg;` next to `mod common;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const PACKAGE: &str = "libapache2-mod-socket-guard";
/// Other jobs on this machine may run apt-get: how long a dpkg call waits for its lock.
const LOCK_WAIT: Duration = Duration::from_secs(180);
/// Answers "action forbidden" to invoke-rc.d, so no maintainer script starts or restarts the
/// system's apache2 (apache2-maintscript-helper restarts it after enabling a module).
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_TEXT: &str =
    "#!/bin/sh\n# added by mod_socket_guard tests/deb_package.rs while it runs dpkg\nexit 101\n";

/// The .deb to install: `SOCKET_GUARD_DEB` (the Makefile sets it to the package `make deb`
/// built), else `build/<package>_<Cargo.toml version>-*.deb`.
pub fn deb_path() -> PathBuf {
    if let Ok(p) = std::env::var("SOCKET_GUARD_DEB") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "SOCKET_GUARD_DEB={} does not exist: make deb",
            p.display()
        );
        return p;
    }
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("build");
    let prefix = format!("{PACKAGE}_{}-", env!("CARGO_PKG_VERSION"));
    std::fs::read_dir(&build)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .unwrap_or_else(|| {
            panic!(
                "no {}/{prefix}*.deb: make deb (or make test-deb)",
                build.display()
            )
        })
}

/// Runs `program args`; (exit success, stdout + stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `program args` and panics with its output unless it succeeds.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let (ok, text) = run(program, args);
    assert!(ok, "`{program} {}` failed:\n{text}", args.join(" "));
    eprintln!("[deb] {program} {}:\n{text}", args.join(" "));
    text
}

/// `dpkg args`, waiting while another dpkg or apt run holds the lock.
pub fn dpkg(args: &[&str]) -> (bool, String) {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let (ok, text) = run("dpkg", args);
        let locked = !ok && text.contains("lock");
        if !locked || Instant::now() >= deadline {
            return (ok, text);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn dpkg_ok(args: &[&str]) -> String {
    let (ok, text) = dpkg(args);
    assert!(ok, "`dpkg {}` failed:\n{text}", args.join(" "));
    eprintln!("[deb] dpkg {}:\n{text}", args.join(" "));
    text
}

/// dpkg's state of the package: "installed", "config-files", ..., or "not-installed" when
/// dpkg has no record of it (never installed, or purged).
pub fn status() -> String {
    let (ok, text) = run("dpkg-query", &["-W", "-f=${db:Status-Status}", PACKAGE]);
    if ok {
        text.trim().to_string()
    } else {
        "not-installed".to_string()
    }
}

/// One field of the installed package (`dpkg-query -W -f=${FIELD}`).
pub fn field(name: &str) -> String {
    run_ok("dpkg-query", &["-W", &format!("-f=${{{name}}}"), PACKAGE])
}

/// The paths the .deb contains (`dpkg-deb -c`), as absolute paths, without "/".
pub fn deb_contents(deb: &Path) -> Vec<PathBuf> {
    run_ok("dpkg-deb", &["-c", &deb.display().to_string()])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| PathBuf::from(p.trim_start_matches('.').trim_end_matches('/')))
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// What the system's apache2 service wrote to its pid file (None: not running). Only ever read.
pub fn system_apache_pid() -> Option<String> {
    std::fs::read_to_string("/run/apache2/apache2.pid")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The package installed for the length of a test. Dropping it purges the package (when dpkg
/// still knows it) and removes the policy-rc.d it added, so a failed test restores the machine.
pub struct Installed {
    added_policy: bool,
}

impl Installed {
    /// `dpkg -i deb` with a policy-rc.d that forbids service actions (added only when the
    /// machine has none). Panics if the package or its files are already there: a manual
    /// `make install` is somebody's, not the test's to overwrite or remove.
    pub fn install(deb: &Path, files: &[PathBuf]) -> Installed {
        assert_eq!(
            status(),
            "not-installed",
            "{PACKAGE} is already known to dpkg"
        );
        let present: Vec<_> = files.iter().filter(|p| p.is_file()).collect();
        assert!(
            present.is_empty(),
            "files of the package exist before it is installed (a manual install?): {present:?}"
        );
        let added_policy = !Path::new(POLICY_RC_D).exists();
        if added_policy {
            write_policy();
        }
        let guard = Installed { added_policy };
        dpkg_ok(&["-i", &deb.display().to_string()]);
        guard
    }
}

fn write_policy() {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(POLICY_RC_D, POLICY_TEXT).expect("write policy-rc.d");
    std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
        .expect("chmod policy-rc.d");
}

impl Drop for Installed {
    fn drop(&mut self) {
        if status() != "not-installed" {
            let (ok, text) = dpkg(&["-P", PACKAGE]);
            if !ok {
                eprintln!("[deb] cleanup: dpkg -P {PACKAGE} failed:\n{text}");
            }
        }
        // Only our own file: another job may have put its own policy-rc.d there meanwhile.
        if self.added_policy && std::fs::read_to_string(POLICY_RC_D).is_ok_and(|t| t == POLICY_TEXT)
        {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}
