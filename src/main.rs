fn main() -> std::process::ExitCode {
    synack::cli::main()
}
