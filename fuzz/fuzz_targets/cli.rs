#![no_main]
//! The command line: arbitrary argument vectors parse or fail, never panic.
use libfuzzer_sys::fuzz_target;
use netstat_user::cli::Cli;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args = std::iter::once("netstat".to_string()).chain(text.split('\0').map(str::to_string));
    if let Ok(Ok(cli)) = Cli::parse_args(args) {
        let _ = cli.into_config();
    }
});
