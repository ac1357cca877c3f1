use std::process::ExitCode;

fn main() -> ExitCode {
    foobar_service::main(&foobar_webapp::SERVICE, foobar_webapp::run)
}
