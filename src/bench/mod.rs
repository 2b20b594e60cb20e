//! Load generator (placeholder until the generator lands).

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is not available in this build")
}
