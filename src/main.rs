fn main() {
    let _ = glommio::LocalExecutorBuilder::default();
}
