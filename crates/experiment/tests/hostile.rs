//! Hostile experiment files: the examples and the seeds' two configs, mutated, read and resolved
//! as `nextmini up` does (topology built, links planned, flows and workloads checked). Nothing
//! may panic or run away with memory. Fixed seed (see `crates/hostile`).

#[test]
fn experiment_files_can_say_anything() {
    let inputs = hostile::mutated_text(hostile::corpus("experiment"), 4);
    hostile::check("experiment files", inputs, 1500, |text| {
        let Ok(file) = experiment::ExperimentFile::parse("hostile.toml", text) else {
            return false;
        };
        let _ = file.resolve(None);
        true
    });
}
