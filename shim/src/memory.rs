//! Keeps the resident set of the long-lived shim small.
//!
//! A shim lives as long as its container and mostly sleeps, yet after
//! setting the container up most of its resident memory is code and
//! read-only data that only setup used (page faults map whole page-cache
//! folios and their neighbours). Dropping the page-table entries of the
//! read-only file mappings once setup is done lets only what the serving
//! loop touches come back. Pages stay in the page cache, shared by every
//! shim; nothing is lost because a mapping is only dropped when it has no
//! private (copy-on-write) pages.

/// Drops the resident pages of this process's read-only, unmodified file
/// mappings. Best effort: a failure only costs memory.
pub fn trim_code_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_read_only_mappings(&smaps) {
        let addr = start as *mut libc::c_void;
        // SAFETY: a private read-only file mapping of ours without private
        // pages: its contents are exactly the file's, re-read on next touch.
        unsafe { libc::madvise(addr, end - start, libc::MADV_DONTNEED) };
    }
}

/// Address ranges of private, non-writable, file-backed mappings with no
/// anonymous (copy-on-write) pages, from `/proc/<pid>/smaps` text.
fn clean_read_only_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            // [vdso], [vvar] and anonymous mappings never qualify.
            let candidate = perms.starts_with('r')
                && perms.as_bytes().get(1) == Some(&b'-')
                && perms.ends_with('p')
                && path.starts_with('/');
            current = candidate.then_some((a, b));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && f.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean_read_only_mappings;

    #[test]
    fn only_clean_read_only_file_mappings() {
        let smaps = "\
1000-2000 r--p 00000000 fe:00 1 /usr/bin/shim
Rss: 8 kB
Anonymous: 0 kB
2000-3000 r-xp 00001000 fe:00 1 /usr/bin/shim
Anonymous: 0 kB
3000-4000 r--p 00002000 fe:00 1 /usr/bin/shim
Anonymous: 4 kB
4000-5000 rw-p 00003000 fe:00 1 /usr/bin/shim
Anonymous: 0 kB
5000-6000 r-xp 00000000 00:00 0 [vdso]
Anonymous: 0 kB
6000-7000 r--s 00000000 fe:00 2 /dev/shm/x
Anonymous: 0 kB
7000-8000 rw-p 00000000 00:00 0
Anonymous: 4 kB
";
        assert_eq!(
            clean_read_only_mappings(smaps),
            vec![(0x1000, 0x2000), (0x2000, 0x3000)]
        );
    }
}
