//! `oi apply -f FILE`: cluster specs from YAML (one or more documents
//! separated by `---`) or JSON, applied in order.

use super::exit::{CliError, CliResult, Exit};
use oi_api_types::model::ClusterSpec;
use serde::Deserialize;

/// Every spec in `text`, in order. Empty YAML documents are skipped.
/// Nothing is applied unless every document parses.
pub fn parse_documents(text: &str, source: &str) -> CliResult<Vec<ClusterSpec>> {
    let invalid = |msg: String| CliError::new(Exit::Invalid, msg);
    let specs = if text.trim_start().starts_with('{') {
        let spec: ClusterSpec = serde_json::from_str(text)
            .map_err(|e| invalid(format!("{source} is not a valid cluster spec (JSON): {e}")))?;
        vec![spec]
    } else {
        let mut specs = Vec::new();
        for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let spec = Option::<ClusterSpec>::deserialize(doc).map_err(|e| {
                invalid(format!(
                    "{source}, document {}, is not a valid cluster spec: {e}",
                    i + 1
                ))
            })?;
            specs.extend(spec);
        }
        specs
    };
    if specs.is_empty() {
        return Err(invalid(format!(
            "{source} holds no cluster spec: write e.g. `name: prod` and \
             `kubernetesVersion: 1.37.2` (`oi version --kubernetes` lists versions)"
        )));
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_parse_in_order() {
        let text = "---\nname: a\nkubernetesVersion: 1.37.2\n---\n\
                    name: b\nkubernetesVersion: 1.37.2\nreplicas: 3\napiServerExtraSans: [x.example]\n---\n";
        let specs = parse_documents(text, "f").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0], ClusterSpec::new("a", "1.37.2", 1));
        assert_eq!(specs[1].replicas, 3);
        assert_eq!(specs[1].api_server_extra_sans, ["x.example"]);
    }

    #[test]
    fn json_parses() {
        let specs =
            parse_documents(r#"{"name": "a", "kubernetesVersion": "1.37.2"}"#, "f").unwrap();
        assert_eq!(specs, [ClusterSpec::new("a", "1.37.2", 1)]);
    }

    #[test]
    fn bad_documents_are_invalid_input() {
        let cases = [
            ("name: a\nkubernetesVersion: 1.37.2\nbogus: 1\n", "bogus"),
            ("name: a\n---\nname: b\nreplicas: many\n", "document 2"),
            ("", "no cluster spec"),
            ("---\n---\n", "no cluster spec"),
            ("{\"name\": 1}", "JSON"),
            ("a: [", "document 1"),
        ];
        for (text, needle) in cases {
            let e = parse_documents(text, "spec.yaml").unwrap_err();
            assert_eq!(e.exit, Exit::Invalid, "{text}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
            assert!(e.message.contains("spec.yaml"), "{}", e.message);
        }
    }
}
