import Foundation
import Numerics
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Where a buffer's memory comes from, and that a large one goes back to the system when freed.
@Suite(.serialized, .computeThread) struct FloatBufferTests {
    @Test func smallAndLargeBuffersAreAlignedAndFilled() throws {
        for count in [1, 1000, FloatBuffer.ownMappingBytes / 4 + 1] {
            let buffer = try FloatBuffer(allocating: count, value: 1.5)
            #expect(Int(bitPattern: buffer.pointer) % 64 == 0)
            #expect(buffer.buffer.allSatisfy { $0 == 1.5 }, "\(count) values")
        }
    }

    /// A job's buffers are freed when it ends. Held in malloc's heap they would stay with the
    /// process (glibc maps a chunk of its own only above a threshold that rises, up to 32 MiB,
    /// each time such a chunk is freed); a buffer of its own mapping is unmapped at once.
    ///
    /// Another thread of the test process may map something at the freed address before the
    /// check (a run failed so once, beside a test mapping a large buffer): a few tries, of which
    /// one must find the pages gone. A buffer in malloc's heap never would.
    @Test func aLargeBufferIsUnmappedWhenFreed() throws {
        // Raise glibc's mapping threshold past the buffer's size, as a server's earlier jobs do.
        let earlier = malloc(16 << 20)
        _ = write(-1, earlier, 1)  // a use the optimiser cannot see through, or it drops the pair
        free(earlier)
        let bytes = 8 << 20, page = Int(getpagesize())
        var resident = [UInt8](repeating: 0, count: bytes / page + 1)
        var unmapped = false
        for _ in 0..<5 where !unmapped {
            var pages: (start: UnsafeMutableRawPointer?, length: Int) = (nil, 0)
            do {
                let buffer = try FloatBuffer(allocating: bytes / 4, value: 1)
                // The whole pages it spans (mincore takes a page-aligned start).
                let start = Int(bitPattern: buffer.pointer) / page * page
                pages = (UnsafeMutableRawPointer(bitPattern: start), Int(bitPattern: buffer.pointer) + bytes - start)
                #expect(mincore(pages.start, pages.length, &resident) == 0, "mapped while it lives")
                #expect(resident.prefix(bytes / page).allSatisfy { $0 & 1 == 1 }, "and resident, every page written")
            }
            unmapped = mincore(pages.start, pages.length, &resident) == -1 && errno == ENOMEM
        }
        #expect(unmapped, "its pages went back to the system when it was freed")
    }
}
