//! A restricted pickle reader for PyTorch weight files: it understands the opcodes a saved
//! `state_dict` uses and builds plain values, and refuses everything else by name. Nothing is ever
//! executed: the only "callables" are a fixed list of names (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, the storage types), each
//! turned into data here. Any other global (the way a malicious pickle runs code) is an error that
//! names it.

use std::collections::HashMap;

/// A value built from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Key-value pairs in insertion order (a dict or an OrderedDict).
    Dict(Vec<(Value, Value)>),
    /// An allowed global, not yet applied.
    Global(Global),
    /// A storage reference (a persistent id): its key in the file and element type.
    Storage {
        key: String,
        dtype: Dtype,
    },
    /// A tensor view of a storage.
    Tensor(TensorRef),
}

/// The allowed globals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(Dtype),
}

/// Element types of storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    F16,
    I64,
    I32,
    U8,
    Bool,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 => 2,
            Dtype::U8 | Dtype::Bool => 1,
        }
    }
}

/// A tensor as a saved state_dict describes it: a view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: String,
    pub dtype: Dtype,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    /// Elements of the view; `None` when the shape (read from a file) overflows.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    /// Whether the view is row-major contiguous.
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1;
        for (d, s) in self.shape.iter().zip(&self.stride).rev() {
            if *d != 1 && *s != expect {
                return false;
            }
            expect *= d;
        }
        true
    }
}

fn global(module: &str, name: &str) -> Result<Global, String> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", "FloatStorage") => Global::StorageType(Dtype::F32),
        ("torch", "DoubleStorage") => Global::StorageType(Dtype::F64),
        ("torch", "HalfStorage") => Global::StorageType(Dtype::F16),
        ("torch", "LongStorage") => Global::StorageType(Dtype::I64),
        ("torch", "IntStorage") => Global::StorageType(Dtype::I32),
        ("torch", "ByteStorage") => Global::StorageType(Dtype::U8),
        ("torch", "BoolStorage") => Global::StorageType(Dtype::Bool),
        _ => {
            return Err(format!(
                "refused global '{module}.{name}': a weights file needs only OrderedDict, tensor rebuilds and storages (this file may try to run code)"
            ))
        }
    })
}

/// Reads one pickle from `data` starting at `*pos`, leaving `*pos` after its STOP. Returns the value.
pub fn read(data: &[u8], pos: &mut usize) -> Result<Value, String> {
    Reader { data, pos }.run()
}

struct Reader<'a, 'p> {
    data: &'a [u8],
    pos: &'p mut usize,
}

/// The stack holds values and marks.
enum Item {
    Mark,
    V(Value),
}

impl Reader<'_, '_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = pos_add(*self.pos, n)?;
        let s = self
            .data
            .get(*self.pos..end)
            .ok_or_else(|| format!("pickle cut short at byte {}", *self.pos))?;
        *self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn line(&mut self) -> Result<String, String> {
        let start = *self.pos;
        let end = self.data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle: unterminated GLOBAL")?;
        *self.pos = start + end + 1;
        String::from_utf8(self.data[start..start + end].to_vec()).map_err(|e| e.to_string())
    }

    fn run(&mut self) -> Result<Value, String> {
        let mut st = State::default();
        loop {
            let at = *self.pos;
            let op = self.u8()?;
            if op == b'.' {
                return st.pop();
            }
            let handled = self.constant(op, &mut st)?
                || self.memo_op(op, &mut st)?
                || st.container(op)?
                || self.call(op, &mut st)?;
            if !handled {
                return Err(format!(
                    "pickle opcode 0x{op:02x} at byte {at} is not allowed in a weights file"
                ));
            }
        }
    }

    /// Opcodes that push a constant: none, booleans, integers, floats, strings, bytes.
    fn constant(&mut self, op: u8, st: &mut State) -> Result<bool, String> {
        let v = match op {
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(format!("pickle protocol {proto} is not supported"));
                }
                return Ok(true);
            }
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => {
                let b = self.take(4)?;
                Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            }
            b'K' => Value::Int(self.u8()? as i64),
            b'M' => Value::Int(self.u16()? as i64),
            0x8a => {
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                if n > 8 {
                    // Only the file's magic number is this long; keep it as bytes.
                    Value::Bytes(b.to_vec())
                } else {
                    let mut buf = [0u8; 8];
                    buf[..n].copy_from_slice(b);
                    if n > 0 && b[n - 1] & 0x80 != 0 {
                        for x in buf.iter_mut().skip(n) {
                            *x = 0xff;
                        }
                    }
                    Value::Int(i64::from_le_bytes(buf))
                }
            }
            b'G' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Float(f64::from_be_bytes(a))
            }
            b'X' => {
                let n = self.u32()?;
                let s = std::str::from_utf8(self.take(n)?).map_err(|e| e.to_string())?;
                Value::Str(s.to_string())
            }
            0x8c => {
                let n = self.u8()? as usize;
                let s = std::str::from_utf8(self.take(n)?).map_err(|e| e.to_string())?;
                Value::Str(s.to_string())
            }
            b'U' => {
                let n = self.u8()? as usize;
                Value::Str(String::from_utf8_lossy(self.take(n)?).into())
            }
            b'T' => {
                let n = self.u32()?;
                Value::Str(String::from_utf8_lossy(self.take(n)?).into())
            }
            b'C' => {
                let n = self.u8()? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            _ => return Ok(false),
        };
        st.push(v);
        Ok(true)
    }

    /// Memo opcodes: store the top of the stack under a key, or push a stored value.
    fn memo_op(&mut self, op: u8, st: &mut State) -> Result<bool, String> {
        let (key, put) = match op {
            b'q' => (self.u8()? as usize, true),
            b'r' => (self.u32()?, true),
            0x94 => (st.memo.len(), true),
            b'h' => (self.u8()? as usize, false),
            b'j' => (self.u32()?, false),
            _ => return Ok(false),
        };
        if put {
            let top = st.top()?;
            st.memo.insert(key, top);
        } else {
            let v = st
                .memo
                .get(&key)
                .cloned()
                .ok_or(format!("pickle: memo {key} unset"))?;
            st.push(v);
        }
        Ok(true)
    }

    /// Opcodes that name or apply a callable: globals (only the allowed ones), persistent ids,
    /// REDUCE and BUILD.
    fn call(&mut self, op: u8, st: &mut State) -> Result<bool, String> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                st.push(Value::Global(global(&module, &name)?));
            }
            0x93 => {
                let name = st.pop()?;
                let module = st.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => st.push(Value::Global(global(&m, &n)?)),
                    _ => return Err("pickle: STACK_GLOBAL needs two strings".into()),
                }
            }
            b'Q' => {
                let pid = st.pop()?;
                st.push(persistent(pid)?);
            }
            b'R' => {
                let args = st.pop()?;
                let f = st.pop()?;
                st.push(reduce(f, args)?);
            }
            b'b' => {
                // BUILD: state for the object below (an OrderedDict's `_metadata`); dropped.
                let _state = st.pop()?;
                match st.stack.last() {
                    Some(Item::V(Value::Dict(_) | Value::Tensor(_))) => {}
                    _ => return Err("pickle: BUILD on an object that is not a dict".into()),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The unpickler's stack and memo.
#[derive(Default)]
struct State {
    stack: Vec<Item>,
    memo: HashMap<usize, Value>,
}

impl State {
    fn push(&mut self, v: Value) {
        self.stack.push(Item::V(v));
    }

    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Item::V(v)) => Ok(v),
            _ => Err("pickle: stack underflow".to_string()),
        }
    }

    fn top(&self) -> Result<Value, String> {
        match self.stack.last() {
            Some(Item::V(v)) => Ok(v.clone()),
            _ => Err("pickle: empty stack".into()),
        }
    }

    /// The values above the topmost MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Item::V(v)) => out.push(v),
                Some(Item::Mark) => break,
                None => return Err("pickle: MARK missing".into()),
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Opcodes that make or fill containers: dicts, lists, tuples and marks.
    fn container(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'}' => self.push(Value::Dict(vec![])),
            b']' => self.push(Value::List(vec![])),
            b')' => self.push(Value::Tuple(vec![])),
            b'(' => self.stack.push(Item::Mark),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push(Value::Tuple(items));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items));
            }
            b'a' => {
                let v = self.pop()?;
                match self.stack.last_mut() {
                    Some(Item::V(Value::List(l))) => l.push(v),
                    _ => return Err("pickle: APPEND to a non-list".into()),
                }
            }
            b'e' => {
                let items = self.pop_mark()?;
                match self.stack.last_mut() {
                    Some(Item::V(Value::List(l))) => l.extend(items),
                    _ => return Err("pickle: APPENDS to a non-list".into()),
                }
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.stack.last_mut() {
                    Some(Item::V(Value::Dict(d))) => d.push((k, v)),
                    _ => return Err("pickle: SETITEM on a non-dict".into()),
                }
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("pickle: SETITEMS with an odd count".into());
                }
                match self.stack.last_mut() {
                    Some(Item::V(Value::Dict(d))) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err("pickle: SETITEMS on a non-dict".into()),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn pos_add(pos: usize, n: usize) -> Result<usize, String> {
    pos.checked_add(n)
        .ok_or_else(|| "pickle: length overflow".to_string())
}

/// A persistent id: `('storage', StorageType, key, location, numel[, view])`.
fn persistent(pid: Value) -> Result<Value, String> {
    let Value::Tuple(t) = pid else {
        return Err("pickle: persistent id is not a tuple".into());
    };
    match t.as_slice() {
        [Value::Str(kind), Value::Global(Global::StorageType(dtype)), Value::Str(key), ..]
            if kind == "storage" =>
        {
            Ok(Value::Storage {
                key: key.clone(),
                dtype: *dtype,
            })
        }
        _ => Err(format!("pickle: unknown persistent id {t:?}")),
    }
}

fn usize_list(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(format!("pickle: {what} holds {x:?}")),
            })
            .collect(),
        _ => Err(format!("pickle: {what} is {v:?}")),
    }
}

/// Applies an allowed callable to its arguments, as data.
fn reduce(f: Value, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else {
        return Err("pickle: REDUCE arguments are not a tuple".into());
    };
    match f {
        Value::Global(Global::OrderedDict) => Ok(Value::Dict(vec![])),
        Value::Global(Global::RebuildTensorV2) => match args.as_slice() {
            [Value::Storage { key, dtype }, Value::Int(offset), size, stride, ..] => {
                Ok(Value::Tensor(TensorRef {
                    storage: key.clone(),
                    dtype: *dtype,
                    offset: usize::try_from(*offset).map_err(|e| e.to_string())?,
                    shape: usize_list(size, "tensor size")?,
                    stride: usize_list(stride, "tensor stride")?,
                }))
            }
            _ => Err(format!("pickle: unexpected tensor arguments {args:?}")),
        },
        Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            other => Err(format!("pickle: a parameter of {other:?}")),
        },
        other => Err(format!("pickle: {other:?} cannot be called")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with Python's pickle (protocol 2) from
    /// `OrderedDict([("w", torch._utils._rebuild_tensor_v2(<storage 'k0' float>, 0, (2, 3), (3, 1),
    /// False, OrderedDict()))])`, written by hand opcode by opcode as torch.save writes it.
    fn state_dict_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00wq\x02");
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x03(");
        p.extend(b"(X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x02\x00\x00\x00k0q\x06X\x03\x00\x00\x00cpuq\x07K\x06Ntq\x08Q");
        p.extend(b"K\x00K\x02K\x03\x86q\tK\x03K\x01\x86q\n\x89ccollections\nOrderedDict\nq\x0b)Rq\x0ctq\rRq\x0eu}q\x0fb.");
        p
    }

    #[test]
    fn a_state_dict_becomes_tensor_references() {
        let data = state_dict_pickle();
        let mut pos = 0;
        let v = read(&data, &mut pos).unwrap();
        assert_eq!(pos, data.len(), "stops after its STOP");
        let Value::Dict(items) = v else {
            panic!("{v:?}")
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].0, Value::Str("w".into()));
        assert_eq!(
            items[0].1,
            Value::Tensor(TensorRef {
                storage: "k0".into(),
                dtype: Dtype::F32,
                offset: 0,
                shape: vec![2, 3],
                stride: vec![3, 1],
            })
        );
    }

    /// The classic code-running pickles are refused by name, before anything could run.
    #[test]
    fn globals_that_run_code_are_refused() {
        for (module, name) in [
            ("os", "system"),
            ("builtins", "eval"),
            ("subprocess", "Popen"),
        ] {
            let mut p = vec![0x80, 2, b'c'];
            p.extend(format!("{module}\n{name}\n").bytes());
            p.extend(b"X\x02\x00\x00\x00lsq\x00\x85R.");
            let e = read(&p, &mut 0).unwrap_err();
            assert!(e.contains(&format!("{module}.{name}")), "{e}");
        }
        // STACK_GLOBAL (protocol 4) the same way, and opcodes a state_dict never uses.
        let mut p = vec![0x80, 4, 0x8c, 2];
        p.extend(b"os\x8c\x06system\x93.");
        assert!(read(&p, &mut 0).unwrap_err().contains("os.system"));
        assert!(read(&[0x80, 2, b'i'], &mut 0).unwrap_err().contains("0x69"));
        assert!(read(&[0x80, 2, b'}'], &mut 0)
            .unwrap_err()
            .contains("cut short"));
    }

    #[test]
    fn contiguity() {
        let t = |shape: Vec<usize>, stride: Vec<usize>| TensorRef {
            storage: String::new(),
            dtype: Dtype::F32,
            offset: 0,
            shape,
            stride,
        };
        assert!(t(vec![2, 3], vec![3, 1]).is_contiguous());
        assert!(t(vec![4, 1, 3, 3], vec![9, 9, 3, 1]).is_contiguous());
        assert!(!t(vec![2, 3], vec![1, 2]).is_contiguous());
    }
}
