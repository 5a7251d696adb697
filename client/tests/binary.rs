//! The `roost-client` binary starts and explains itself. (Building this test also makes cargo
//! build the binary, which the workspace's end-to-end tests in `tests/cli.rs` then run.)

use std::process::Command;

#[test]
fn help_lists_every_command() {
    let output = Command::new(env!("CARGO_BIN_EXE_roost-client"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "register",
        "add-client",
        "clients",
        "whoami",
        "publish-packages",
        "requests",
        "decline",
        "discover",
        "--json",
        "--state",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}
