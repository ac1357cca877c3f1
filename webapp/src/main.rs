use std::process::ExitCode;

/// mimalloc, as in the balancer: every request allocates and frees a few small blocks (the
/// request's headers and extensions, the response's header map and boxed body), which
/// glibc's allocator handled with visibly more work (malloc, free, consolidation) under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    foobar_service::main(&foobar_webapp::SERVICE, foobar_webapp::run)
}
