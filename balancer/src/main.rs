use std::process::ExitCode;

fn main() -> ExitCode {
    foobar_service::main(&foobar_balancer::SERVICE, foobar_balancer::run)
}
