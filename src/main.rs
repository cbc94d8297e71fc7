//! The `synack` binary: the command line and the commands' front ends live in [`cmd`];
//! everything they run is the `synack` library.

mod cmd;

#[global_allocator]
static ALLOCATOR: synack::alloc_count::CountingAllocator = synack::alloc_count::CountingAllocator;

fn main() -> std::process::ExitCode {
    cmd::main()
}
