//! Reading Parquet files that may be damaged, without ending the process:
//! the checks and the panic guard shared by datasets and result files.

use parquet::file::metadata::ParquetMetaData;

/// Runs `read`, a read of Parquet data. The Parquet reader panics on some
/// damaged files (page headers, levels and bitmaps it does not check, in
/// parquet 60); such a panic becomes the error `panicked` makes of its
/// message, so a damaged file is refused instead of ending the process.
pub(crate) fn guard_parquet<T, E>(
    read: impl FnOnce() -> Result<T, E>,
    panicked: impl FnOnce(String) -> E,
) -> Result<T, E> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(panicked(format!(
            "damaged Parquet file: the Parquet reader failed on it ({message})"
        )))
    })
}

/// Every column chunk the footer of a Parquet file of `size` bytes lists
/// lies inside the file. The Parquet reader asserts this (and panics) only
/// once it reads the chunk, so a damaged footer is refused here instead,
/// naming the row group and column.
pub(crate) fn check_chunks(metadata: &ParquetMetaData, size: u64) -> Result<(), String> {
    for (group, row_group) in metadata.row_groups().iter().enumerate() {
        for (index, column) in row_group.columns().iter().enumerate() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let length = column.compressed_size();
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(length).ok())
                .and_then(|(start, length)| start.checked_add(length));
            if end.is_none_or(|end| end > size) {
                return Err(format!(
                    "row group {group}, column {index} ({}): its chunk at offset {start}, \
                     {length} bytes, is not inside the file's {size} bytes",
                    column.column_path()
                ));
            }
        }
    }
    Ok(())
}
