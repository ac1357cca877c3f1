use std::process::ExitCode;

fn main() -> ExitCode {
    foobar_service::main(&foobar_dns::SERVICE, foobar_dns::run)
}
