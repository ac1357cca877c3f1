use std::process::ExitCode;

fn main() -> ExitCode {
    foobar_service::main(&foobar_db_router::SERVICE, foobar_db_router::run)
}
