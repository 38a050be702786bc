//! Rebuilds the gateway when a catalog migration or a web app file changes: `sqlx::migrate!`
//! embeds the files of `../schema` and `include_dir!` those of `../web/app` at compile time,
//! and cargo does not otherwise know they are inputs (a directory is scanned recursively).

fn main() {
    println!("cargo:rerun-if-changed=../schema");
    println!("cargo:rerun-if-changed=../web/app");
}
