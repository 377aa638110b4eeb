//! A cache whose features map other caches' rows (HDF5 virtual datasets: a run folder's
//! `merged.h5` maps its shards' features in place, [`crate::runs::merge`]). HDF5 reads a missing
//! source as zeros without a word, so the sources are checked when the cache is opened: each
//! named relative to the cache's folder and inside it (through links too), present, and holding
//! the rows it is mapped for (its size bounded by its file, as every dataset's is). The merged
//! files headstart writes fill what cannot be read with NaN, which every reader refuses.

use std::path::{Component, Path};

use super::{check_declared, open_read};
use crate::cache::CacheMeta;
use crate::error::{Error, Result};

/// Whether `ds` maps other files' rows.
pub(crate) fn is_linked(ds: &hdf5::Dataset) -> bool {
    ds.layout() == hdf5::dataset::Layout::Virtual
}

/// Checks every source of every split's linked `features` of the cache at `path`.
pub(super) fn check_sources(path: &Path, file: &hdf5::File, meta: &CacheMeta) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir_canon = (if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .canonicalize()
    .ok();
    for split in &meta.splits {
        let Ok(ds) = file.dataset(&format!("{split}/features")) else {
            continue; // a missing dataset is an error where it is read
        };
        if !is_linked(&ds) {
            continue;
        }
        let bad = |what: String| Error::cache(path, format!("split '{split}': {what}"));
        let maps = mappings(&ds).map_err(|e| bad(format!("its mapping cannot be read: {e}")))?;
        if maps.is_empty() {
            return Err(bad("its rows map no file".into()));
        }
        let row = meta.feature_shape.iter().product::<usize>().max(1) as u64;
        let mut mapped = 0u64;
        for m in maps {
            let rel = Path::new(&m.file);
            if rel.as_os_str().is_empty()
                || !rel.components().all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(bad(format!(
                    "maps rows of '{}', a name outside its folder: refused",
                    m.file
                )));
            }
            let src = dir.join(rel);
            if !src.is_file() {
                return Err(bad(format!(
                    "its rows are in {}, which is missing (a run folder's merged.h5 maps its shards' files: keep them, or write one file that holds every row with `headstart merge RUN --out FILE`)",
                    src.display()
                )));
            }
            // Through links too: the file itself must lie inside the folder.
            let inside = match (src.canonicalize(), dir_canon.as_ref()) {
                (Ok(real), Some(d)) => real.starts_with(d),
                _ => false,
            };
            if !inside {
                return Err(bad(format!(
                    "maps rows of {}, which lies outside its folder (a link): refused",
                    src.display()
                )));
            }
            let f = open_read(&src).map_err(|e| Error::hdf5(&src, "HDF5", e))?;
            let sds = f
                .dataset(&m.dataset)
                .map_err(|e| bad(format!("{}: {e}", src.display())))?;
            let shape = sds.shape();
            if shape.get(1..) != Some(&meta.feature_shape[..]) || m.points != sds.size() as u64 {
                return Err(bad(format!(
                    "{} holds {shape:?} at {}, the cache maps {} rows of {:?} (the shard changed after it was merged)",
                    src.display(),
                    m.dataset,
                    m.points / row,
                    meta.feature_shape
                )));
            }
            check_declared(&src, split, "features", sds.size(), meta.dtype.bytes())?;
            mapped += m.points;
        }
        if mapped != ds.size() as u64 {
            return Err(bad(format!(
                "its {} values map {mapped} values of other files",
                ds.size()
            )));
        }
    }
    Ok(())
}

/// One source of a virtual dataset: its file (as written in the mapping), its dataset, and how
/// many values of the virtual dataset it fills.
struct Mapping {
    file: String,
    dataset: String,
    points: u64,
}

/// The mappings of virtual dataset `ds`, read from its creation property list with the C
/// library's own calls (hdf5-metno's reading of them fails on hyperslab selections).
fn mappings(ds: &hdf5::Dataset) -> std::result::Result<Vec<Mapping>, String> {
    use hdf5_sys::h5p::{
        H5Pget_virtual_count, H5Pget_virtual_dsetname, H5Pget_virtual_filename,
        H5Pget_virtual_vspace,
    };
    use hdf5_sys::h5s::{H5Sclose, H5Sget_select_npoints};
    let dcpl = ds.dcpl().map_err(|e| e.to_string())?;
    let id = dcpl.id();
    type Getter = unsafe extern "C" fn(
        hdf5_sys::h5i::hid_t,
        libc::size_t,
        *mut libc::c_char,
        libc::size_t,
    ) -> libc::ssize_t;
    let text = |get: Getter, i: usize| -> std::result::Result<String, String> {
        // SAFETY: `id` is the live property list `dcpl` (held for this call) and `i` is below
        // its mapping count; a null buffer of size 0 asks for the length only.
        let n = unsafe { get(id, i, std::ptr::null_mut(), 0) };
        if !(0..=1 << 16).contains(&n) {
            return Err(format!("mapping {i}: a name of length {n}"));
        }
        let mut buf = vec![0u8; n as usize + 1];
        // SAFETY: as above; the buffer holds `n` bytes and the terminating NUL.
        let got = unsafe { get(id, i, buf.as_mut_ptr().cast(), buf.len()) };
        if got != n {
            return Err(format!("mapping {i}: its name cannot be read"));
        }
        buf.truncate(n as usize);
        String::from_utf8(buf).map_err(|_| format!("mapping {i}: a name that is not UTF-8"))
    };
    hdf5::sync::sync(|| {
        let mut count: libc::size_t = 0;
        // SAFETY: `id` is a live dataset creation property list; `count` is a local.
        if unsafe { H5Pget_virtual_count(id, &mut count) } < 0 {
            return Err("not a virtual dataset's property list".to_string());
        }
        (0..count)
            .map(|i| {
                // SAFETY: `i` is below the count; the space is closed once it is read.
                let points = unsafe {
                    let space = H5Pget_virtual_vspace(id, i);
                    if space < 0 {
                        return Err(format!("mapping {i}: its selection cannot be read"));
                    }
                    let p = H5Sget_select_npoints(space);
                    H5Sclose(space);
                    p
                };
                Ok(Mapping {
                    file: text(H5Pget_virtual_filename, i)?,
                    dataset: text(H5Pget_virtual_dsetname, i)?,
                    points: u64::try_from(points)
                        .map_err(|_| format!("mapping {i}: {points} values"))?,
                })
            })
            .collect()
    })
}
