//! The test bed builds and side-loads the versions of `tests/bed/versions.tsv`;
//! the coordinator runs those of its built-in matrix. They must be the same
//! table, or a version would be offered that the bed never tried.

use oi_coordinator::cluster::versions::VersionMatrix;

#[test]
fn the_bed_builds_exactly_the_matrix() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bed/versions.tsv");
    let text = std::fs::read_to_string(path).expect("read tests/bed/versions.tsv");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    let matrix = VersionMatrix::builtin();
    let versions: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(versions, matrix.versions(), "versions, oldest first");
    assert_eq!(versions.last().copied(), Some(matrix.default_version()));
    for r in &rows {
        let release = matrix.get(r[0]).unwrap();
        assert_eq!(
            release.images.etcd,
            format!("registry.k8s.io/etcd:{}-0", r[1]),
            "etcd of {}",
            r[0]
        );
        assert_eq!(
            release.images.coredns,
            format!("registry.k8s.io/coredns/coredns:v{}", r[2]),
            "CoreDNS of {}",
            r[0]
        );
    }
}
