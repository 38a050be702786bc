//! Rebuilds the gateway when a catalog migration changes: `sqlx::migrate!` embeds the files of
//! `../schema` at compile time, and cargo does not otherwise know they are inputs.

fn main() {
    println!("cargo:rerun-if-changed=../schema");
}
