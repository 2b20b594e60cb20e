fn main() -> std::process::ExitCode {
    nself_realtime::cli::main()
}
