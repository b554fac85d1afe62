//! Generates Rust bindings for the httpd/APR API the module uses.
//!
//! Headers are found through `apxs -q` (override with the APXS environment variable). Only the
//! functions, types and constants the module needs are allowlisted, so the generated file stays
//! small and a header change elsewhere in httpd cannot break the build.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn apxs_query(apxs: &str, var: &str) -> String {
    let out = Command::new(apxs).args(["-q", var]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => fail(&format!(
            "`{apxs} -q {var}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!(
            "cannot run `{apxs}` ({e}). Install the httpd development files: \
             `apt-get install apache2-dev` (Debian/Ubuntu) or `dnf install httpd-devel`, \
             or point the APXS environment variable at your apxs"
        )),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("\nmod_socket_guard build error: {msg}\n");
    std::process::exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=include/wrapper.h");
    println!("cargo:rerun-if-env-changed=APXS");
    let apxs = env::var("APXS").unwrap_or_else(|_| "apxs".to_string());

    let mut clang_args: Vec<String> = Vec::new();
    for var in ["INCLUDEDIR", "APR_INCLUDEDIR", "APU_INCLUDEDIR"] {
        let dir = apxs_query(&apxs, var);
        if !dir.is_empty() {
            clang_args.push(format!("-I{dir}"));
        }
    }
    // EXTRA_CPPFLAGS carries -D flags (e.g. -D_GNU_SOURCE, -DLINUX) the headers rely on.
    clang_args.extend(
        apxs_query(&apxs, "EXTRA_CPPFLAGS")
            .split_whitespace()
            .filter(|f| f.starts_with("-D") || f.starts_with("-I"))
            .map(str::to_string),
    );

    // A missing libclang makes bindgen panic with a long message; say plainly what to install.
    if std::panic::catch_unwind(clang_sys_probe).is_err() {
        fail("libclang was not found. Install it: `apt-get install libclang-dev` (Debian/Ubuntu) or `dnf install clang-devel`, or set LIBCLANG_PATH");
    }

    let bindings = bindgen::Builder::default()
        .header("include/wrapper.h")
        .clang_args(&clang_args)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .prepend_enum_name(false)
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        // Types
        .allowlist_type("module_struct|module|command_rec|cmd_parms|cmd_func|server_rec|conn_rec|request_rec")
        .allowlist_type("apr_pool_t|apr_socket_t|apr_shm_t|apr_status_t|apr_sockaddr_t|apr_os_sock_t")
        .allowlist_type("ap_conf_vector_t|process_rec|server_addr_rec|apr_uri_t|cmd_how")
        // Functions
        .allowlist_function("ap_hook_(check_config|post_config|child_init|pre_connection|post_read_request|log_transaction|monitor|handler|pre_close_connection)")
        .allowlist_function("ap_log_error_|ap_rwrite|ap_set_content_type|ap_get_server_description|ap_show_mpm|ap_mpm_query|ap_state_query|ap_check_cmd_context")
        .allowlist_function("ap_get_server_name|ap_set_module_config|ap_get_module_config|ap_setn|ap_table_setn")
        .allowlist_function("apr_pool_cleanup_register|apr_pool_cleanup_null|apr_pool_cleanup_kill|apr_pool_userdata_get|apr_pool_userdata_set|apr_palloc|apr_pstrdup|apr_pstrndup")
        .allowlist_function("apr_shm_create|apr_shm_destroy|apr_shm_baseaddr_get|apr_shm_size_get|apr_os_sock_get|apr_optional_hook_add|apr_table_setn|apr_table_set")
        .allowlist_type("ap_listen_rec|ap_directive_t")
        // The guard process: forked and supervised like mod_cgid's daemon.
        .allowlist_function("apr_proc_fork|apr_proc_other_child_register|apr_proc_other_child_unregister|apr_pool_note_subprocess|ap_exists_config_define")
        .allowlist_type("apr_proc_t|unixd_config_rec")
        .allowlist_var("ap_unixd_config|APR_OC_REASON_.*|APR_INCHILD|APR_INPARENT|APR_KILL_.*|APR_JUST_WAIT")
        .allowlist_var("ap_server_conf|ap_listeners|ap_conftree")
        // Constants
        .allowlist_var("MODULE_MAGIC_(COOKIE|NUMBER_MAJOR|NUMBER_MINOR)|AP_MODULE_FLAG_ALWAYS_MERGE|APR_HOOK_(MIDDLE|FIRST|LAST|REALLY_FIRST|REALLY_LAST)")
        .allowlist_var("OK|DECLINED|DONE|HTTP_METHOD_NOT_ALLOWED|HTTP_BAD_REQUEST|HTTP_INTERNAL_SERVER_ERROR|M_GET|APR_SUCCESS|RSRC_CONF|GLOBAL_ONLY|NOT_IN_.*")
        .allowlist_var("APLOG_(EMERG|ALERT|CRIT|ERR|WARNING|NOTICE|INFO|DEBUG|TRACE1)|APLOG_NO_MODULE")
        .allowlist_var("AP_MPMQ_.*|AP_SQ_.*|AP_STATUS_(SHORT|NOTABLE|EXTENDED)|AP_CONN_KEEPALIVE|AP_CONN_CLOSE")
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen could not read the httpd headers: {e}")));

    let out =
        PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}

/// Asks bindgen to parse an empty translation unit: the cheapest way to find out whether
/// libclang can be loaded before doing real work.
fn clang_sys_probe() {
    let _ = bindgen::Builder::default()
        .header_contents("probe.h", "")
        .generate();
}
