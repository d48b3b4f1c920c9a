// The store's migrations are read when the crate is compiled: a new one must rebuild it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
