#[global_allocator]
static ALLOCATOR: synack::alloc_count::CountingAllocator = synack::alloc_count::CountingAllocator;

fn main() -> std::process::ExitCode {
    synack::cli::main()
}
