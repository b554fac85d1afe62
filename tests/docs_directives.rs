//! docs/directives.md against a real `apache2`: the page lists exactly the directives the
//! loaded module registers (`apache2 -L`), every example passes `apache2 -t`, every error shown
//! is the one Apache prints, every Context is where Apache accepts the directive, and every
//! Default is what a server without the directive runs with (read from `?auto`).

mod common;
#[path = "common/docs.rs"]
mod docs;

use common::{apache_cmd, configtest, Apache, Mpm, Opts, StatusAuto};
use std::collections::BTreeSet;

/// One `## <Name> Directive` section of docs/directives.md.
#[derive(Debug)]
struct Documented {
    name: String,
    /// `Syntax:`, `Default:`, `Context:`, ... cells of its table, without the colon.
    fields: Vec<(String, String)>,
    /// ```apache blocks that must pass configtest.
    examples: Vec<String>,
    /// ```apache blocks followed by a ```text block with the error Apache prints for them.
    errors: Vec<(String, String)>,
}

impl Documented {
    fn field(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{}: no `{key}:` row", self.name))
    }

    /// A valid one-line use of the directive: the first example line that sets it.
    fn valid_line(&self) -> String {
        self.examples
            .iter()
            .flat_map(|e| e.lines())
            .map(str::trim)
            .find(|l| l.split_whitespace().next() == Some(self.name.as_str()))
            .unwrap_or_else(|| panic!("{}: no example sets it", self.name))
            .to_string()
    }
}

fn parse_section(heading: &str, body: &str) -> Option<Documented> {
    let name = heading.strip_suffix(" Directive")?.to_string();
    let fields = docs::tables(body)
        .into_iter()
        .flat_map(|(header, rows)| std::iter::once(header).chain(rows))
        .filter_map(|cells| {
            let key = cells.first()?.strip_suffix(':')?.to_string();
            Some((key, cells.get(1)?.clone()))
        })
        .collect();
    let blocks = docs::fences(body);
    let mut d = Documented {
        name,
        fields,
        examples: Vec::new(),
        errors: Vec::new(),
    };
    for (i, block) in blocks.iter().enumerate() {
        if block.info != "apache" {
            continue;
        }
        match blocks.get(i + 1) {
            Some(next) if next.info == "text" && next.text.starts_with("AH00526") => {
                d.errors.push((block.text.clone(), next.text.clone()))
            }
            _ => d.examples.push(block.text.clone()),
        }
    }
    Some(d)
}

fn documented() -> Vec<Documented> {
    let md = docs::read("directives.md");
    let all: Vec<Documented> = docs::sections(&md)
        .iter()
        .filter_map(|(h, b)| parse_section(h, b))
        .collect();
    assert!(!all.is_empty(), "no `## <Name> Directive` section found");
    all
}

/// The directives the loaded module registers, as `apache2 -L` lists them.
fn registered() -> BTreeSet<String> {
    let (ok, out) = apache_cmd(&Opts::new(Mpm::Event), &["-L"]);
    assert!(ok, "apache2 -L failed:\n{out}");
    let names: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.strip_suffix(" (mod_socket_guard.c)"))
        .map(str::to_string)
        .collect();
    assert!(
        !names.is_empty(),
        "apache2 -L lists no directive of ours:\n{out}"
    );
    names
}

/// The directive named by a `Syntax:` cell: the first word of its code span.
fn syntax_name(syntax: &str) -> String {
    let span = docs::code_spans(syntax);
    let first = span.first().map(String::as_str).unwrap_or(syntax);
    first.split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn the_page_lists_exactly_the_registered_directives() {
    let docs = documented();
    let mut failures = Vec::new();
    for d in &docs {
        if syntax_name(d.field("Syntax")) != d.name {
            failures.push(format!("{}: Syntax names {:?}", d.name, d.field("Syntax")));
        }
        for key in ["Description", "Default"] {
            if d.field(key).is_empty() {
                failures.push(format!("{}: empty {key}", d.name));
            }
        }
        if d.field("Status") != "Extension" || d.field("Module") != "mod_socket_guard" {
            failures.push(format!("{}: Status/Module rows are wrong", d.name));
        }
    }
    let from_syntax: Vec<String> = docs
        .iter()
        .map(|d| syntax_name(d.field("Syntax")))
        .collect();
    let documented: BTreeSet<String> = from_syntax.iter().cloned().collect();
    if documented.len() != from_syntax.len() {
        failures.push(format!("a directive is documented twice: {from_syntax:?}"));
    }
    let registered = registered();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&registered).collect();
    if !missing.is_empty() || !unknown.is_empty() {
        failures.push(format!(
            "registered but not documented: {missing:?}; documented but not registered: {unknown:?}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// None if `config` (in the main server of a generated config) passes `apache2 -t`.
fn configtest_failure(what: &str, config: &str) -> Option<String> {
    let (ok, out) = configtest(&Opts::new(Mpm::Event).global(config));
    (!ok || !out.contains("Syntax OK"))
        .then(|| format!("{what}: the example\n{config}fails:\n{out}"))
}

#[test]
fn every_example_passes_configtest() {
    let mut failures = Vec::new();
    for d in documented() {
        if d.examples.is_empty() {
            failures.push(format!("{}: no example", d.name));
        }
        failures.extend(
            d.examples
                .iter()
                .filter_map(|e| configtest_failure(&d.name, e)),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every ```apache block of the pages users copy from: README (`../README.md`), the
/// troubleshooting and fleet pages. A comment after a directive, say, is an extra argument to
/// Apache ("takes one argument").
#[test]
fn the_user_pages_configuration_passes_configtest() {
    let mut failures = Vec::new();
    for page in ["../README.md", "troubleshooting.md", "fleet.md"] {
        let blocks: Vec<docs::Fence> = docs::fences(&docs::read(page))
            .into_iter()
            .filter(|f| f.info == "apache")
            .collect();
        assert!(!blocks.is_empty(), "{page} has no ```apache block");
        failures.extend(
            blocks
                .iter()
                .filter(|b| !b.text.contains("LoadModule"))
                .filter_map(|b| configtest_failure(page, &b.text)),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_error_shown_is_the_one_apache_prints() {
    let mut failures = Vec::new();
    for d in documented() {
        if d.errors.is_empty() {
            failures.push(format!("{}: no example of a bad value", d.name));
        }
        for (config, error) in &d.errors {
            let (ok, out) = configtest(&Opts::new(Mpm::Event).global(config));
            // The first line (AH00526 with a file and line number) depends on the config file.
            let expected: Vec<&str> = error.lines().skip(1).collect();
            let shown = expected.iter().all(|l| out.lines().any(|o| o == *l));
            if ok || !out.contains("AH00526: Syntax error") || !shown {
                failures.push(format!(
                    "{}: `{}` should fail with\n{}\nbut apache2 -t printed:\n{out}",
                    d.name,
                    config.trim(),
                    expected.join("\n")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs `line` in `<VirtualHost>` and `<Location>`; returns what disagrees with `context`.
fn context_failures(d: &Documented, line: &str) -> Vec<String> {
    let context = d.field("Context");
    let in_vhost = context == "server config, virtual host";
    if !in_vhost && context != "server config" {
        return vec![format!(
            "{}: Context {context:?} is neither form used",
            d.name
        )];
    }
    let vhost = format!(
        "<VirtualHost 127.0.0.1:@PORT@>\n    ServerName c.test\n    {line}\n</VirtualHost>"
    );
    let location = format!("<Location \"/x\">\n    {line}\n</Location>");
    let cases = [
        (line.to_string(), true, ""),
        (vhost, in_vhost, "cannot occur within <VirtualHost> section"),
        (location, false, "not allowed in <Location> context"),
    ];
    let mut failures = Vec::new();
    for (config, should_pass, refusal) in cases {
        let (ok, out) = configtest(&Opts::new(Mpm::Event).global(&config));
        let as_documented = if should_pass {
            ok && out.contains("Syntax OK")
        } else {
            !ok && out.contains(&format!("{} {refusal}", d.name))
        };
        if !as_documented {
            failures.push(format!(
                "{} (Context: {context}):\n{config}\nshould {} configtest, got:\n{out}",
                d.name,
                if should_pass { "pass" } else { "fail" }
            ));
        }
    }
    failures
}

#[test]
fn every_context_is_where_apache_accepts_it() {
    let failures: Vec<String> = documented()
        .iter()
        .flat_map(|d| context_failures(d, &d.valid_line()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A documented duration or `Off` (0) in milliseconds, read by the module's own parser (as
/// Apache would hand it the value).
fn doc_ms(value: &str) -> u64 {
    mod_socket_guard::config::parse_duration_or_off("default", value, 0)
        .unwrap_or_else(|e| panic!("not a duration: {e}"))
}

/// What a server without the directive shows for it in `?auto`: `(value, documented value)`,
/// or None for the directives `?auto` does not show.
fn shown_default(name: &str, doc: &str, auto: &StatusAuto) -> Option<(String, String)> {
    let main = auto.vhosts().into_iter().next().expect("a Vhost: line");
    let ms = || doc_ms(doc).to_string();
    let (shown, expected) = match name {
        "SocketGuardAutoClose" => (main.get("AutoClose")?.to_string(), doc.to_string()),
        "SocketGuardCloseWaitTimeout" => (main.get("TimeoutMs")?.to_string(), ms()),
        "SocketGuardAbandonedTimeout" => (main.get("AbandonedTimeoutMs")?.to_string(), ms()),
        "SocketGuardScanInterval" => (auto.get("ScanIntervalMs")?.to_string(), ms()),
        "SocketGuardFullScanInterval" => (auto.get("FullScanIntervalMs")?.to_string(), ms()),
        "SocketGuardGracefulDeadline" => (auto.get("GracefulDeadlineMs")?.to_string(), ms()),
        "SocketGuardRescue" => (auto.get("Rescue")?.to_string(), doc.to_string()),
        // Not on the status page: its default is checked by src/config.rs's unit tests.
        "SocketGuardHungChildTimeout" => return None,
        // Not a value but a formula: checked on its own below.
        "SocketGuardSlots" => return None,
        other => panic!("{other}: say how its default shows on the status page"),
    };
    Some((shown, expected))
}

#[test]
fn every_default_is_what_the_server_runs_with() {
    // The harness's event sizing: ServerLimit 4, ThreadLimit 64.
    let server = Apache::start(Opts::new(Mpm::Event));
    let auto = server.status_auto();
    let mut failures = Vec::new();
    for d in documented() {
        let default = d.field("Default");
        let value = docs::code_spans(default)
            .first()
            .and_then(|s| s.strip_prefix(&format!("{} ", d.name)).map(str::to_string));
        let Some(value) = value else {
            continue; // a formula, not a directive line (SocketGuardSlots)
        };
        if let Some((shown, expected)) = shown_default(&d.name, &value, &auto) {
            if shown != expected {
                failures.push(format!(
                    "{}: documented default {value} ({expected}), the server shows {shown}",
                    d.name
                ));
            }
        }
    }
    let slots = documented()
        .into_iter()
        .find(|d| d.name == "SocketGuardSlots")
        .expect("SocketGuardSlots section");
    let formula = "`ServerLimit` × `ThreadLimit` (× 4 on event) + 64";
    if !slots.field("Default").contains(formula) || auto.num("SlotsTotal") != 4 * 64 * 4 + 64 {
        failures.push(format!(
            "SocketGuardSlots: Default {:?}; with ServerLimit 4, ThreadLimit 64 on event the server has SlotsTotal {}",
            slots.field("Default"),
            auto.num("SlotsTotal")
        ));
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), auto.raw);
}
