//! `DType`: the one table of element types, their names, sizes and wire numbers
//! (protocol.md §7).

use crate::error::{QuillError, Result};

/// Element type of a tensor.
///
/// ```
/// use quill::DType;
/// assert_eq!(DType::Float32.element_size(), 4);
/// assert_eq!(DType::from_wire(3).unwrap(), DType::Bfloat16);
/// assert_eq!(DType::from_name("bool").unwrap().name(), "bool");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Float32,
    Float16,
    Bfloat16,
    Float64,
    Int8,
    Int32,
    Int64,
    Uint8,
    Bool,
}

/// `(dtype, wire number, name, element size)`: the single source of these facts.
const TABLE: [(DType, u8, &str, usize); 9] = [
    (DType::Float32, 1, "float32", 4),
    (DType::Float16, 2, "float16", 2),
    (DType::Bfloat16, 3, "bfloat16", 2),
    (DType::Float64, 4, "float64", 8),
    (DType::Int8, 5, "int8", 1),
    (DType::Int32, 6, "int32", 4),
    (DType::Int64, 7, "int64", 8),
    (DType::Uint8, 8, "uint8", 1),
    (DType::Bool, 9, "bool", 1),
];

impl DType {
    /// Every supported dtype, in wire-number order.
    pub const ALL: [DType; 9] = [
        DType::Float32,
        DType::Float16,
        DType::Bfloat16,
        DType::Float64,
        DType::Int8,
        DType::Int32,
        DType::Int64,
        DType::Uint8,
        DType::Bool,
    ];

    fn row(self) -> &'static (DType, u8, &'static str, usize) {
        // The table is in declaration order, so the discriminant indexes it.
        &TABLE[self as usize]
    }

    /// Size of one element in bytes.
    pub fn element_size(self) -> usize {
        self.row().3
    }

    /// Canonical lower-case name (`"float32"`, `"bool"`, …).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Number used on the wire (TENSOR_META `dtype` byte).
    pub fn wire(self) -> u8 {
        self.row().1
    }

    /// The dtype of a wire number; 0 ("invalid") and unknown numbers are errors.
    pub fn from_wire(value: u8) -> Result<DType> {
        TABLE
            .iter()
            .find(|r| r.1 == value)
            .map(|r| r.0)
            .ok_or_else(|| QuillError::UnsupportedDType {
                reason: format!("unknown dtype number {value} (expected 1..=9, see protocol §7)"),
            })
    }

    /// The dtype of a name; accepts the canonical names plus `"bool_"`.
    pub fn from_name(name: &str) -> Result<DType> {
        let name = if name == "bool_" { "bool" } else { name };
        TABLE
            .iter()
            .find(|r| r.2 == name)
            .map(|r| r.0)
            .ok_or_else(|| QuillError::UnsupportedDType {
                reason: format!(
                    "unsupported dtype {name:?} (expected one of: {})",
                    TABLE.iter().map(|r| r.2).collect::<Vec<_>>().join(", ")
                ),
            })
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float32 | DType::Float16 | DType::Bfloat16 | DType::Float64
        )
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::Int8 | DType::Int32 | DType::Int64 | DType::Uint8
        )
    }

    /// Whether the type can hold negative values (floats and signed integers).
    pub fn is_signed(self) -> bool {
        self.is_float() || matches!(self, DType::Int8 | DType::Int32 | DType::Int64)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_protocol_section_7() {
        let expect = [
            ("float32", 1, 4),
            ("float16", 2, 2),
            ("bfloat16", 3, 2),
            ("float64", 4, 8),
            ("int8", 5, 1),
            ("int32", 6, 4),
            ("int64", 7, 8),
            ("uint8", 8, 1),
            ("bool", 9, 1),
        ];
        for (d, (name, wire, size)) in DType::ALL.iter().zip(expect) {
            assert_eq!(d.name(), name);
            assert_eq!(d.wire(), wire);
            assert_eq!(d.element_size(), size);
            assert_eq!(DType::from_wire(wire).unwrap(), *d);
            assert_eq!(DType::from_name(name).unwrap(), *d);
        }
    }

    #[test]
    fn invalid_and_unknown_numbers_are_errors() {
        for v in [0u8, 10, 255] {
            assert!(matches!(
                DType::from_wire(v),
                Err(QuillError::UnsupportedDType { .. })
            ));
        }
        assert!(DType::from_name("complex64").is_err());
    }

    #[test]
    fn predicates() {
        assert!(DType::Float32.is_float() && DType::Float32.is_signed());
        assert!(DType::Uint8.is_integer() && !DType::Uint8.is_signed());
        assert!(!DType::Bool.is_integer() && !DType::Bool.is_float() && !DType::Bool.is_signed());
        assert!(DType::Int8.is_signed());
    }
}
