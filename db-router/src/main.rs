use std::process::ExitCode;

fn main() -> ExitCode {
    // The one subcommand: an admin action on the running router, not a service.
    if foobar_db_router::topology::command::requested() {
        return foobar_db_router::topology::command::run();
    }
    foobar_service::main(&foobar_db_router::SERVICE, foobar_db_router::run)
}
