use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = qwm::cli::Cli::parse();
    if let Err(e) = qwm::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
