import Testing
@testable import Proxy

/// Each decision of an exchange, with no sockets, processes or clock (issue 12 §2).
struct ExchangeMachineTests {
    private func started(_ framing: BodyFraming = .none, idempotent: Bool = true, upgrade: Bool = false) -> ExchangeMachine {
        var m = ExchangeMachine()
        m.begin(framing: framing, isIdempotent: idempotent, wantsUpgrade: upgrade)
        return m
    }

    /// A machine whose request went out on a pooled (or new) connection and is awaiting its head.
    private func awaitingHead(pooled: Bool, _ framing: BodyFraming = .none, idempotent: Bool = true) -> ExchangeMachine {
        var m = started(framing, idempotent: idempotent)
        _ = m.attemptStarted()
        m.upstreamAttached(pooled: pooled)
        m.upstreamConnected()
        return m
    }

    // MARK: Admit and answer locally

    @Test func aLocalAnswerKeepsTheConnectionOnlyWithoutAnUnreadBody() {
        #expect(started().keepAliveAfterLocalAnswer(clientKeepAlive: true, draining: false))
        #expect(!started().keepAliveAfterLocalAnswer(clientKeepAlive: false, draining: false))
        #expect(!started().keepAliveAfterLocalAnswer(clientKeepAlive: true, draining: true))
        // A body the proxy does not read would be taken for the next request: close instead.
        #expect(!started(.contentLength(5)).keepAliveAfterLocalAnswer(clientKeepAlive: true, draining: false))
        #expect(!started(.chunked).keepAliveAfterLocalAnswer(clientKeepAlive: true, draining: false))
        #expect(started(.contentLength(0)).keepAliveAfterLocalAnswer(clientKeepAlive: true, draining: false))
        var m = started()
        m.answeredLocally(keepAlive: false)
        #expect(m.responseStarted && m.closesAfterResponse(draining: false, nextRequestWaiting: false))
        #expect(m.upstreamFailed() == .cutClient)
    }

    // MARK: Pick and connect

    @Test func attemptsAreCountedAndCapped() {
        var m = started()
        for _ in 0..<4 {
            #expect(m.mayAttempt(maxAttempts: 4))
            _ = m.attemptStarted()
            #expect(m.connectFailed(isLocalResourceProblem: false) == .tryNextBackend)
        }
        #expect(!m.mayAttempt(maxAttempts: 4))
        #expect(m.mayAttempt(maxAttempts: 5))
        // A new exchange starts from zero.
        m.begin(framing: .none, isIdempotent: true, wantsUpgrade: false)
        #expect(m.attempts == 0 && m.mayAttempt(maxAttempts: 1))
    }

    @Test func noBackendLeftIs502UnlessNoneWasEverHealthy() {
        let m = started()
        #expect(m.noBackend(anyHealthy: false, triedAny: false) == .noHealthyBackend)
        #expect(m.noBackend(anyHealthy: false, triedAny: false).status == 503)
        #expect(m.noBackend(anyHealthy: false, triedAny: true) == .noBackendLeft)
        #expect(m.noBackend(anyHealthy: true, triedAny: false).status == 502)
        #expect(ExchangeMachine.GiveUp.attemptsExhausted.status == 502)
    }

    @Test func aLocalResourceProblemIsNotFailedOver() {
        let m = started()
        #expect(m.connectFailed(isLocalResourceProblem: true) == .localResourceExhausted)
        #expect(m.connectFailed(isLocalResourceProblem: false) == .tryNextBackend)
    }

    @Test func stalePooledBytesAreLookedForHarderWhenTheRequestCannotBeRetried() {
        var get = started()
        #expect(get.attemptStarted() == .pooledOrNew(checkWholeSocket: false))
        var post = started(.contentLength(10), idempotent: false)
        #expect(post.attemptStarted() == .pooledOrNew(checkWholeSocket: true))
        // A PUT with a body cannot be resent either: the body is gone.
        var put = started(.chunked, idempotent: true)
        #expect(put.attemptStarted() == .pooledOrNew(checkWholeSocket: true))
        var bodylessPost = started(.none, idempotent: false)
        #expect(bodylessPost.attemptStarted() == .pooledOrNew(checkWholeSocket: true))
    }

    // MARK: The keep-alive race

    @Test func aPooledConnectionThatDiesBeforeAnsweringIsRetriedOnceOnANewOne() {
        var m = awaitingHead(pooled: true)
        #expect(m.attempts == 1)
        #expect(m.upstreamClosed(eof: true, bodyUntilClose: false, sawResponseBytes: false) == .retryOnNewConnection)
        #expect(m.attempts == 0, "the race is not the backend's failure")
        #expect(m.mayAttempt(maxAttempts: 1))
        #expect(m.attemptStarted() == .newOnly)
        m.upstreamAttached(pooled: false)
        #expect(m.upstreamClosed(eof: true, bodyUntilClose: false, sawResponseBytes: false) == .failed)
        #expect(m.upstreamFailed() == .answer)
        // A reset is the race too.
        var reset = awaitingHead(pooled: true)
        #expect(reset.upstreamClosed(eof: false, bodyUntilClose: false, sawResponseBytes: false) == .retryOnNewConnection)
    }

    @Test func theRaceIsNotRetriedWhenTheRequestMightHaveTakenEffect() {
        var fresh = awaitingHead(pooled: false)
        #expect(fresh.upstreamClosed(eof: true, bodyUntilClose: false, sawResponseBytes: false) == .failed)
        var post = awaitingHead(pooled: true, .contentLength(3), idempotent: false)
        post.requestBodyFinished()
        #expect(post.upstreamClosed(eof: true, bodyUntilClose: false, sawResponseBytes: false) == .failed)
        var bodyPut = awaitingHead(pooled: true, .contentLength(3), idempotent: true)
        #expect(bodyPut.upstreamClosed(eof: true, bodyUntilClose: false, sawResponseBytes: false) == .failed)
        var halfHead = awaitingHead(pooled: true)
        #expect(halfHead.upstreamClosed(eof: true, bodyUntilClose: false, sawResponseBytes: true) == .failed)
        // A 1xx arrived (its head bytes already consumed): the backend had the request.
        var afterInterim = awaitingHead(pooled: true)
        #expect(afterInterim.interimResponse(maxInterim: 16, clientVersionMinor: 1) == .relay)
        afterInterim.interimRelayed()
        #expect(afterInterim.upstreamClosed(eof: true, bodyUntilClose: false, sawResponseBytes: false) == .failed)
    }

    // MARK: The response

    @Test func aFailureIsAnsweredUntilTheResponseHasBegunThenTheClientIsCut() {
        var m = awaitingHead(pooled: false)
        #expect(m.upstreamFailed() == .answer)
        #expect(m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false) == .relay(closeAfter: false))
        #expect(m.upstreamFailed() == .cutClient)
    }

    @Test func aMalformedBodyIsAnsweredIfItsHeadNeverLeft() {
        var m = awaitingHead(pooled: false)
        _ = m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        // Head and a bad chunk in the same read: the head is still in the proxy's buffer.
        #expect(m.malformedResponseBody() == .answer)
        #expect(!m.responseStarted && !m.upstreamReusable)
        #expect(m.upstreamFailed() == .answer)
        var sent = awaitingHead(pooled: false)
        _ = sent.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        sent.responseBytesSent()
        #expect(sent.malformedResponseBody() == .cutClient)
    }

    @Test func anEarlyResponseClosesTheConnectionAfterIt() {
        var early = awaitingHead(pooled: false, .contentLength(1_000_000), idempotent: false)
        #expect(early.finalResponseHead(status: 413, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false) == .relay(closeAfter: true))
        #expect(early.closesAfterResponse(draining: false, nextRequestWaiting: false))
        #expect(!early.upstreamMayBePooled(responseKeepAlive: true, responseBodyUntilClose: false))
        var complete = awaitingHead(pooled: false, .contentLength(3), idempotent: false)
        complete.requestBodyFinished()
        #expect(complete.finalResponseHead(status: 201, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false) == .relay(closeAfter: false))
        #expect(!complete.closesAfterResponse(draining: false, nextRequestWaiting: false))
    }

    @Test func theResponseSaysCloseWhenTheClientDrainingOrHTTP10FramingAskIt() {
        for (keepAlive, draining, untilClose) in [(false, false, false), (true, true, false), (true, false, true)] {
            var m = awaitingHead(pooled: false)
            #expect(m.finalResponseHead(status: 200, clientKeepAlive: keepAlive, draining: draining,
                                        bodyUntilCloseForClient: untilClose) == .relay(closeAfter: true))
        }
    }

    @Test func a101BecomesATunnelOnlyWhenAnUpgradeWasAskedFor() {
        var asked = started(upgrade: true)
        #expect(asked.wantsUpgrade)
        #expect(asked.finalResponseHead(status: 101, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false) == .tunnel)
        asked.tunnelStarted()
        #expect(asked.upstreamFailed() == .cutClient)
        var unasked = started()
        #expect(unasked.finalResponseHead(status: 101, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false) == .refuseUnaskedSwitch)
        #expect(unasked.upstreamFailed() == .answer, "the 502 can still be sent")
        // An upgrade with a body is not tunnelled: the rest of the body would be read as the new protocol.
        let withBody = started(.contentLength(4), upgrade: true)
        #expect(!withBody.wantsUpgrade)
    }

    @Test func interimResponsesAreRelayedToHTTP11DroppedForHTTP10AndCapped() {
        var m = awaitingHead(pooled: false)
        #expect(m.interimResponse(maxInterim: 2, clientVersionMinor: 1) == .relay)
        m.responseBytesSent()
        m.interimRelayed()
        #expect(m.upstreamFailed() == .answer, "after a 100 Continue a 502 can still follow")
        #expect(m.interimResponse(maxInterim: 2, clientVersionMinor: 0) == .drop)
        #expect(m.interimResponse(maxInterim: 2, clientVersionMinor: 1) == .refuse)
        m.upstreamConnected()  // a new connection starts the count again
        #expect(m.interimResponse(maxInterim: 2, clientVersionMinor: 1) == .relay)
    }

    @Test func aCloseDelimitedBodyEndsWithTheUpstreamsOrderlyClose() {
        var m = awaitingHead(pooled: true)
        _ = m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        #expect(m.upstreamClosed(eof: true, bodyUntilClose: true, sawResponseBytes: true) == .responseComplete)
        #expect(!m.upstreamMayBePooled(responseKeepAlive: true, responseBodyUntilClose: true))
        var reset = awaitingHead(pooled: true)
        _ = reset.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        #expect(reset.upstreamClosed(eof: false, bodyUntilClose: true, sawResponseBytes: true) == .failed)
        #expect(reset.upstreamFailed() == .cutClient)
    }

    // MARK: Deadlines

    private let limits = ExchangeMachine.Limits(clientBodyMs: 1000, upstreamMs: 5000, responseIdleMs: 3000)

    @Test func aStalledRequestBodyIs408UntilTheResponseBeginsThenACut() {
        var m = awaitingHead(pooled: false, .contentLength(10), idempotent: false)
        let clock = ExchangeMachine.Clock(now: 10_000, lastClientActivity: 9_000, lastUpstreamActivity: 9_990, responseHeadDueAt: 0)
        #expect(m.checkDeadlines(clock, limits) == .requestBodyStalled(.answer))
        _ = m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        #expect(m.checkDeadlines(clock, limits) == .requestBodyStalled(.cutClient))
        let moving = awaitingHead(pooled: false, .contentLength(10), idempotent: false)
        let recent = ExchangeMachine.Clock(now: 10_000, lastClientActivity: 9_700, lastUpstreamActivity: 0, responseHeadDueAt: 0)
        #expect(moving.checkDeadlines(recent, limits) == .rearm(inMs: 700), "no head deadline while the body is coming")
    }

    @Test func noHeadWithinUpstreamMsOfTheLastRequestByteIs504() {
        let m = awaitingHead(pooled: false)
        let due = ExchangeMachine.Clock(now: 10_000, lastClientActivity: 0, lastUpstreamActivity: 9_999, responseHeadDueAt: 10_000)
        #expect(m.checkDeadlines(due, limits) == .responseHeadTimedOut)
        let early = ExchangeMachine.Clock(now: 10_000, lastClientActivity: 0, lastUpstreamActivity: 9_999, responseHeadDueAt: 12_500)
        #expect(m.checkDeadlines(early, limits) == .rearm(inMs: 2_500), "upstream activity does not move the head deadline")
    }

    @Test func aSilentResponseBodyIsCutAfterItsIdleLimit() {
        var m = awaitingHead(pooled: false)
        _ = m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        let silent = ExchangeMachine.Clock(now: 10_000, lastClientActivity: 0, lastUpstreamActivity: 7_000, responseHeadDueAt: 1)
        #expect(m.checkDeadlines(silent, limits) == .responseStalled)
        let talking = ExchangeMachine.Clock(now: 10_000, lastClientActivity: 0, lastUpstreamActivity: 9_000, responseHeadDueAt: 1)
        #expect(m.checkDeadlines(talking, limits) == .rearm(inMs: 2_000))
    }

    // MARK: The end

    @Test func theUpstreamGoesBackToItsPoolOnlyAfterACleanExchange() {
        var m = awaitingHead(pooled: true)
        _ = m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        #expect(m.upstreamMayBePooled(responseKeepAlive: true, responseBodyUntilClose: false))
        #expect(!m.upstreamMayBePooled(responseKeepAlive: false, responseBodyUntilClose: false))
        m.upstreamSpoiled()  // bytes past the body, a failed write
        #expect(!m.upstreamMayBePooled(responseKeepAlive: true, responseBodyUntilClose: false))
        m.upstreamAttached(pooled: false)
        #expect(m.upstreamMayBePooled(responseKeepAlive: true, responseBodyUntilClose: false), "a new connection starts clean")
    }

    @Test func drainingClosesAnIdleConnectionButAnswersARequestAlreadySent() {
        var m = awaitingHead(pooled: false)
        _ = m.finalResponseHead(status: 200, clientKeepAlive: true, draining: false, bodyUntilCloseForClient: false)
        #expect(!m.closesAfterResponse(draining: false, nextRequestWaiting: false))
        #expect(m.closesAfterResponse(draining: true, nextRequestWaiting: false))
        #expect(!m.closesAfterResponse(draining: true, nextRequestWaiting: true))
        m.finished()
        #expect(!m.responseStarted)
    }
}
