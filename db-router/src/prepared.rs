//! Prepared statements across two backends: one statement id for the client, a statement
//! per backend connection that executes it, prepared there lazily.
//!
//! Classification happens once, at PREPARE, from the statement's text; each EXECUTE goes
//! where that class and the session's state send it. A backend that has not prepared the
//! statement yet prepares it first (silently), and since its first EXECUTE must carry the
//! parameter types, the types the client last sent are remembered and put back into an
//! EXECUTE that lacks them (the "new params bound" flag). Long data (COM_STMT_SEND_LONG_DATA)
//! is kept until the EXECUTE, because only then is the backend known.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};

use crate::classifier::Classification;
use crate::wire::{Cursor, with_id};

/// A statement the client prepared.
#[derive(Debug)]
pub struct Statement {
    pub sql: Vec<u8>,
    pub class: Classification,
    pub params: u16,
    /// Parameter types (2 bytes each) from the last EXECUTE that sent them.
    pub types: Option<Vec<u8>>,
    /// COM_STMT_SEND_LONG_DATA payloads waiting for the next EXECUTE.
    pub long_data: Vec<BytesMut>,
    /// The backend role that ran the last EXECUTE (where its cursor is, for FETCH).
    pub last_role: Option<crate::topology::snapshot::Role>,
}

/// The session's prepared statements, by client statement id.
#[derive(Debug, Default)]
pub struct Statements {
    next_id: u32,
    last_prepared: Option<u32>,
    map: HashMap<u32, Statement>,
}

impl Statements {
    /// The id the next prepared statement gets (ids start at 1).
    pub fn next_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    pub fn insert(&mut self, id: u32, statement: Statement) {
        self.last_prepared = Some(id);
        self.map.insert(id, statement);
    }

    /// The statement `id` names; MariaDB's `0xFFFFFFFF` means the last one prepared.
    pub fn resolve(&self, id: u32) -> Option<u32> {
        let id = if id == u32::MAX {
            self.last_prepared?
        } else {
            id
        };
        self.map.contains_key(&id).then_some(id)
    }

    pub fn get(&self, id: u32) -> Option<&Statement> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Statement> {
        self.map.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<Statement> {
        self.map.remove(&id)
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.last_prepared = None;
    }
}

/// The parameter types an EXECUTE carries (when its new-params-bound flag is set).
pub fn sent_types(payload: &[u8], params: u16) -> Result<Option<&[u8]>, &'static str> {
    if params == 0 {
        return Ok(None);
    }
    let mut c = Cursor::new(payload);
    c.bytes(10).ok_or("COM_STMT_EXECUTE too short")?;
    c.bytes(usize::from(params).div_ceil(8))
        .ok_or("COM_STMT_EXECUTE: NULL bitmap truncated")?;
    match c.u8().ok_or("COM_STMT_EXECUTE: bound flag missing")? {
        0 => Ok(None),
        _ => Ok(Some(
            c.bytes(usize::from(params) * 2)
                .ok_or("COM_STMT_EXECUTE: parameter types truncated")?,
        )),
    }
}

/// The EXECUTE to send to a backend: its statement id, and the parameter types inserted when
/// that backend has not been sent them and the client's EXECUTE does not carry them.
pub fn execute_for_backend(
    payload: &[u8],
    backend_id: u32,
    params: u16,
    types: Option<&[u8]>,
    backend_has_types: bool,
) -> Result<BytesMut, &'static str> {
    if payload.len() < 10 {
        return Err("COM_STMT_EXECUTE too short");
    }
    let carries_types = sent_types(payload, params)?.is_some();
    if params == 0 || carries_types || backend_has_types {
        return Ok(with_id(payload, backend_id));
    }
    let types =
        types.ok_or("COM_STMT_EXECUTE without parameter types for a statement never given them")?;
    let flag_at = 10 + usize::from(params).div_ceil(8);
    let mut out = BytesMut::with_capacity(payload.len() + types.len());
    out.put_slice(&payload[..flag_at]);
    out.put_u8(1);
    out.put_slice(types);
    out.put_slice(&payload[flag_at + 1..]);
    out[1..5].copy_from_slice(&backend_id.to_le_bytes());
    Ok(out)
}

/// The cursor bits of an EXECUTE's flags byte (CURSOR_TYPE_READ_ONLY, FOR_UPDATE,
/// SCROLLABLE).
const CURSOR_FLAGS: u8 = 0x07;

/// An EXECUTE kept to be replayed on another connection (a prepared `SET` with parameters,
/// see `session::routing::Bound`): statement id 0 (each replay names its own), the parameter
/// types always (the statement is prepared afresh there), and no cursor (a `SET` has no rows;
/// the replay reads a plain OK).
pub fn replayable_execute(
    payload: &[u8],
    params: u16,
    types: Option<&[u8]>,
) -> Result<Vec<u8>, &'static str> {
    let mut execute = execute_for_backend(payload, 0, params, types, false)?;
    execute[5] &= !CURSOR_FLAGS;
    Ok(execute.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// COM_STMT_EXECUTE for 2 parameters: id 9, no cursor, one iteration.
    fn execute(bound: bool) -> Vec<u8> {
        let mut p = vec![0x17, 9, 0, 0, 0, 0, 1, 0, 0, 0, 0b00];
        p.push(u8::from(bound));
        if bound {
            p.extend_from_slice(&[8, 0, 253, 0]);
        }
        p.extend_from_slice(&[42, 0, 0, 0, 0, 0, 0, 0, 1, b'x']);
        p
    }

    #[test]
    fn types_are_read_from_an_execute_that_binds_them() {
        assert_eq!(
            sent_types(&execute(true), 2).unwrap(),
            Some(&[8, 0, 253, 0][..])
        );
        assert_eq!(sent_types(&execute(false), 2).unwrap(), None);
        assert!(sent_types(&execute(true)[..12], 2).is_err());
    }

    #[test]
    fn types_are_inserted_for_a_backend_that_never_got_them() {
        let rewritten =
            execute_for_backend(&execute(false), 77, 2, Some(&[8, 0, 253, 0]), false).unwrap();
        let mut expected = execute(true);
        expected[1] = 77;
        assert_eq!(&rewritten[..], &expected[..]);
        let unchanged = execute_for_backend(&execute(false), 77, 2, None, true).unwrap();
        assert_eq!(unchanged.len(), execute(false).len());
        assert!(execute_for_backend(&execute(false), 77, 2, None, false).is_err());
    }

    #[test]
    fn a_replayable_execute_names_no_statement_binds_its_types_and_opens_no_cursor() {
        let mut with_cursor = execute(false);
        with_cursor[5] = 1;
        let replay = replayable_execute(&with_cursor, 2, Some(&[8, 0, 253, 0])).unwrap();
        let mut expected = execute(true);
        expected[1] = 0;
        assert_eq!(replay, expected);
        assert_eq!(
            replayable_execute(&execute(true), 2, None).unwrap(),
            expected
        );
        assert!(replayable_execute(&execute(false), 2, None).is_err());
        assert!(replayable_execute(&execute(true)[..9], 2, None).is_err());
    }
}
