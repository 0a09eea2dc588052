/// The prompt tokenizer of SPEC §3: lower-case ASCII letters, split on every
/// byte outside [a-z0-9], hash each piece with FNV-1a-32 into 1..<vocab,
/// keep the first `maxTokens`, pad with 0. No tokens means the null condition.
public struct PromptTokenizer: Sendable {
    public let vocab: Int
    public let maxTokens: Int

    public init(vocab: Int, maxTokens: Int) {
        precondition(vocab >= 2 && maxTokens >= 1)
        self.vocab = vocab
        self.maxTokens = maxTokens
    }

    public func tokenize(_ prompt: String) -> [Int32] {
        var ids = [Int32](repeating: 0, count: maxTokens)
        tokenize(prompt, into: &ids[...])
        return ids
    }

    /// Writes exactly `maxTokens` ids into `ids`.
    public func tokenize(_ prompt: String, into ids: inout ArraySlice<Int32>) {
        precondition(ids.count == maxTokens)
        var count = 0
        var hash: UInt32 = 0x811C_9DC5
        var pieceLength = 0
        func finishPiece() {
            if pieceLength > 0 && count < maxTokens {
                ids[ids.startIndex + count] = Int32(1 + Int(hash) % (vocab - 1))
                count += 1
            }
            hash = 0x811C_9DC5
            pieceLength = 0
        }
        for var byte in prompt.utf8 {
            if byte >= 0x41 && byte <= 0x5A { byte += 0x20 }
            let isWordByte = (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
            if isWordByte {
                hash = (hash ^ UInt32(byte)) &* 0x0100_0193
                pieceLength += 1
            } else {
                finishPiece()
            }
        }
        finishPiece()
        for i in count..<maxTokens { ids[ids.startIndex + i] = 0 }
    }
}
