//! Runs the inventory story on SQLite (a temporary file, or
//! `DATABASE_URL=sqlite://…`) or on PostgreSQL (`DATABASE_URL=postgres://…`,
//! in schema `inventory`), and prints what happens.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let temporary = format!("sqlite://{}", dir.path().join("inventory.db").display());
    let url = std::env::var("DATABASE_URL").unwrap_or(temporary);
    println!("store: {}", eslab_postgres::redact_url(&url));
    let told = inventory::run(&url, "inventory").await?;
    println!("done: {:?}; the live subscription saw {:?}", told.product, told.live);
    Ok(())
}
