#![no_main]
//! The command line: arbitrary argument vectors parse or fail (with a
//! net-tools hint or our own error), never panic; an error is one line.
use libfuzzer_sys::fuzz_target;
use netstat_user::cli;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<std::ffi::OsString> = std::iter::once("netstat".into()).chain(text.split('\0').map(Into::into)).collect();
    if let Err(e) = cli::config_from_args(&args) {
        let line = e.to_string();
        assert!(!line.contains('\n'), "a usage error of more than one line: {line:?}");
    }
});
