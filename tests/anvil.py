"""A real Ethereum node for tests: anvil, with the real Uniswap-V2 contracts, driven by real
transactions.

``bash .ci/tools.sh`` installs anvil 1.7.1 and the contracts' build artefacts from npm into
.ci/anvil/node_modules (pinned by .ci/anvil/package-lock.json). Nothing here needs pytest
except the fixtures at the end.

:func:`start_anvil` runs anvil's binary itself (not ``npx``, whose wrapper leaves anvil running
when it gets SIGTERM) on 127.0.0.1 at a port the kernel picks (``--port 0``; the port is read
from the ``Listening on 127.0.0.1:PORT`` line anvil writes to its log file, never a pipe that
could fill up), with chain id 31337 and transactions mined in the order they were sent
(``--order fifo``). It dies with the process that started it (PR_SET_PDEATHSIG, Linux) and
:meth:`Anvil.stop` ends it with SIGTERM, then SIGKILL. A missing binary is an
:class:`AnvilError` saying to run ``bash .ci/tools.sh``; the fixtures fail with it and never
skip.

:class:`Anvil` is the node and its controls: mining on demand or per transaction, block
timestamps (a fixed number of seconds per block makes stream time deterministic; anvil's
``--block-time`` mines by the wall clock instead), ``anvil_reorg`` and snapshots. Accounts
are anvil's ten unlocked dev accounts (``eth_accounts``), so transactions are sent with
``eth_sendTransaction`` and no key is needed.

:class:`Uniswap` deploys WETH9, UniswapV2Factory and UniswapV2Router02 from the npm artefacts
and trades through the router: tokens (OpenZeppelin's ERC20PresetMinterPauser), pools with
liquidity, buys, sells and the rug pull (all liquidity removed). Amounts are integers in the
smallest unit (wei, and 10**-18 token); ``ETH`` is 10**18.

Every send returns a :class:`Tx`. With automine on (anvil's default) it is mined and its
receipt checked before the call returns (a reverted transaction raises :class:`TxFailed`;
one that would revert already fails web3's gas estimate); with automine off it is pending
(``receipt`` None, gas :data:`PENDING_GAS`, as an estimate against the last block could be
wrong) until :meth:`Anvil.mine`, then :meth:`Tx.mined` gives the receipt.

Fixtures: ``anvil`` (a fresh chain per test, block ``n`` at ``GENESIS_TIMESTAMP + 12 n``
seconds) and ``uniswap`` (the contracts deployed on it). A test module imports them,
``from tests.anvil import anvil_fixture, uniswap_fixture  # noqa: F401``, and its tests take
``anvil`` and ``uniswap`` (or tests/conftest.py lists ``"tests.anvil"`` in ``pytest_plugins``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeAlias

import pytest
import requests
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.types import RPCEndpoint, TxParams, TxReceipt, Wei

from pipeline.broker.processes import parent_death_hook

NODE_MODULES = Path(__file__).resolve().parent.parent / ".ci" / "anvil" / "node_modules"
INSTALL_HINT = "run `bash .ci/tools.sh` (it runs `npm ci` in .ci/anvil)"
CHAIN_ID = 31337
ETH = 10**18
MAINNET_WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"  # = pipeline.features.pools.WETH
GENESIS_TIMESTAMP = 1_700_000_000  # the fixture's genesis block (2023-11-14 22:13:20 UTC)
SECONDS_PER_BLOCK = 12  # the fixture's block interval, as on Ethereum
PENDING_GAS = 1_000_000  # the gas of a transaction sent with automine off
DEADLINE = 2**32 - 1  # the router's deadline argument: never reached
ARTEFACTS = {  # build artefacts (abi, creation bytecode) under NODE_MODULES
    "WETH9": "@uniswap/v2-periphery/build/WETH9.json",
    "UniswapV2Factory": "@uniswap/v2-core/build/UniswapV2Factory.json",
    "UniswapV2Pair": "@uniswap/v2-core/build/UniswapV2Pair.json",
    "UniswapV2Router02": "@uniswap/v2-periphery/build/UniswapV2Router02.json",
    "ERC20PresetMinterPauser":
        "@openzeppelin/contracts/build/contracts/ERC20PresetMinterPauser.json",
}
_PLATFORM_PACKAGES = {  # (system, machine) -> the optional dependency holding the binary
    ("Linux", "x86_64"): "anvil-linux-amd64", ("Linux", "aarch64"): "anvil-linux-arm64",
    ("Darwin", "x86_64"): "anvil-darwin-amd64", ("Darwin", "arm64"): "anvil-darwin-arm64",
}
_LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")
_POLL_S = 0.01


class AnvilError(RuntimeError):
    """anvil could not be found, started or stopped, or refused a request."""


class TxFailed(AnvilError):
    """A mined transaction reverted (receipt status 0)."""


# --- the node --------------------------------------------------------------------------------


def anvil_binary() -> Path:
    """The anvil binary of this platform's npm package (it may not exist yet)."""
    package = _PLATFORM_PACKAGES.get((platform.system(), platform.machine()))
    if package is None:
        raise AnvilError(f"anvil has no npm binary for {platform.system()} {platform.machine()}")
    return NODE_MODULES / "@foundry-rs" / package / "bin" / "anvil"


def start_anvil(tmp_path: Path, *args: str, chain_id: int = CHAIN_ID,
                genesis_timestamp: int | None = None, seconds_per_block: int | None = None,
                binary: Path | None = None, timeout_s: float = 20.0) -> Anvil:
    """Start anvil (extra command-line ``args`` appended), logging to a new file in
    ``tmp_path``; return once it listens. ``seconds_per_block`` fixes each block's timestamp
    to its parent's plus that many seconds."""
    binary = binary or anvil_binary()
    if not binary.is_file():
        raise AnvilError(f"anvil binary {binary} is missing: {INSTALL_HINT}")
    argv = [str(binary), "--host", "127.0.0.1", "--port", "0", "--chain-id", str(chain_id),
            *([] if "--order" in args else ["--order", "fifo"]),
            *([] if genesis_timestamp is None else ["--timestamp", str(genesis_timestamp)]),
            *args]
    log_path = Path(tempfile.mkstemp(prefix="anvil-", suffix=".log", dir=tmp_path)[1])
    began = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=parent_death_hook())  # noqa: PLW1509 - it only calls prctl
    try:
        port = _wait_for_port(process, log_path, began + timeout_s)
    except BaseException:
        _terminate(process, timeout_s=5.0)
        raise
    node = Anvil(process, log_path, f"http://127.0.0.1:{port}", time.monotonic() - began)
    try:
        if seconds_per_block is not None:
            node.set_block_interval(seconds_per_block)
    except BaseException:
        node.stop()
        raise
    return node


def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> int:
    while True:
        match = _LISTENING.search(log_path.read_bytes())
        if match:
            return int(match.group(1))
        status = process.poll()
        if status is not None:
            raise AnvilError(f"anvil exited with status {status} before listening; its log "
                             f"ends: {_tail(log_path)}")
        if time.monotonic() > deadline:
            raise AnvilError(f"anvil did not listen in time; its log ends: {_tail(log_path)}")
        time.sleep(_POLL_S)


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _tail(log_path: Path, lines: int = 8) -> str:
    text = log_path.read_text(errors="replace")
    return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])


def _json_tx(tx: TxParams | bytes | str) -> dict[str, Any] | str:
    """A transaction as anvil's JSON-RPC takes it: a request with hex numbers, or raw bytes."""
    if isinstance(tx, bytes | str):
        return HexBytes(tx).to_0x_hex()
    return {key: hex(value) if isinstance(value, int) else
            HexBytes(value).to_0x_hex() if isinstance(value, bytes) else value
            for key, value in tx.items()}


@dataclass(frozen=True)
class Tx:
    """A sent transaction: its hash, and its receipt once mined (None while pending)."""

    hash: HexBytes
    receipt: TxReceipt | None
    w3: Web3 = field(repr=False, compare=False)

    def mined(self, timeout_s: float = 10.0) -> TxReceipt:
        """The receipt (waiting for it); :class:`TxFailed` if the transaction reverted."""
        receipt = self.receipt or self.w3.eth.wait_for_transaction_receipt(self.hash, timeout_s)
        if receipt["status"] != 1:
            raise TxFailed(f"transaction {self.hash.to_0x_hex()} reverted in block "
                           f"{receipt['blockNumber']}")
        return receipt


class Transactable(Protocol):
    """A contract call or constructor, ready to send."""

    def transact(self, transaction: TxParams | None = None) -> HexBytes: ...


class Anvil:
    """A running anvil: ``url``, a connected ``w3``, ``accounts``, and the chain's controls.
    A context manager that stops it."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, url: str,
                 startup_s: float) -> None:
        self.process = process
        self.log_path = log_path
        self.url = url
        self.startup_s = startup_s
        self._session = requests.Session()
        self._session.trust_env = False  # a loopback node: no proxy (nor its look-up per call)
        # no retries: a request to a dead node fails at once. The chain id is asked once, not
        # four times a transaction (web3 checks it while filling one in); nothing else is
        # cached, since blocks and transactions change with reorgs and reverts
        self.w3 = Web3(HTTPProvider(url, session=self._session, request_kwargs={"timeout": 30},
                                    exception_retry_configuration=None,
                                    cache_allowed_requests=True,
                                    cacheable_requests={RPCEndpoint("eth_chainId")}))

    @functools.cached_property
    def accounts(self) -> list[ChecksumAddress]:
        """anvil's unlocked dev accounts (``eth_accounts``), 10 000 ether each unless its
        ``--accounts`` and ``--balance`` options say otherwise."""
        return list(self.w3.eth.accounts)

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call (for the ``anvil_*`` and ``evm_*`` methods web3 does not wrap);
        its result, or :class:`AnvilError` with the node's message."""
        response = self.w3.provider.make_request(RPCEndpoint(method), list(params))
        if "error" in response:
            raise AnvilError(f"{method}{list(params)!r}: {response['error']}")
        return response.get("result")

    @property
    def head(self) -> int:
        """The latest block's number."""
        return self.w3.eth.block_number

    def block_hashes(self, first: int, last: int) -> list[HexBytes]:
        """The hashes of blocks ``first`` to ``last``, both included."""
        return [HexBytes(self.w3.eth.get_block(n)["hash"]) for n in range(first, last + 1)]

    # - sending -

    @property
    def automine(self) -> bool:
        """Whether every transaction is mined into its own block as it arrives."""
        return bool(self.rpc("anvil_getAutomine"))

    def send(self, tx: TxParams) -> Tx:
        """``eth_sendTransaction`` from an unlocked account; mined unless automine is off."""
        if not self.automine:
            return Tx(self.w3.eth.send_transaction({"gas": PENDING_GAS, **tx}), None, self.w3)
        return self._mined(self.w3.eth.send_transaction(tx))

    def transact(self, call: Transactable, sender: ChecksumAddress, value: int = 0) -> Tx:
        """Send a contract call from ``sender`` (with ``value`` wei) like :meth:`send`."""
        tx: TxParams = {"from": sender, "value": Wei(value)}
        if not self.automine:
            return Tx(call.transact({**tx, "gas": PENDING_GAS}), None, self.w3)
        return self._mined(call.transact(tx))

    def _mined(self, tx_hash: HexBytes) -> Tx:
        tx = Tx(tx_hash, self.w3.eth.wait_for_transaction_receipt(tx_hash, 10), self.w3)
        tx.mined()
        return tx

    # - chain controls -

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks now (with the pending transactions in the first)."""
        self.rpc("anvil_mine", blocks)

    def set_automine(self, on: bool) -> None:
        """On: a block per transaction (anvil's default). Off: transactions wait for
        :meth:`mine`."""
        self.rpc("evm_setAutomine", on)

    def next_timestamp(self, timestamp: int) -> None:
        """The next block's timestamp (later ones follow it by the block interval, if set)."""
        self.rpc("evm_setNextBlockTimestamp", timestamp)

    def set_block_interval(self, seconds: int | None) -> None:
        """Each new block's timestamp is its parent's plus ``seconds``; None: the wall clock
        again."""
        if seconds is None:
            self.rpc("anvil_removeBlockTimestampInterval")
        else:
            self.rpc("anvil_setBlockTimestampInterval", seconds)

    def reorg(self, depth: int, txs: Sequence[tuple[TxParams | bytes | str, int]] = ()) -> None:
        """Replace the last ``depth`` blocks with as many new ones (same height, new hashes;
        their transactions are dropped, not replayed). ``txs`` go into the new blocks: (a
        request from an unlocked account, or a raw signed transaction; the block's offset,
        0 for the first new block, below ``depth``); :class:`TxFailed` if one reverted. New
        blocks whose contents and timestamps equal the old ones' keep their hashes."""
        # anvil_reorg estimates no gas: a request without it gets too little and reverts
        self.rpc("anvil_reorg", depth, [[_json_tx(tx if isinstance(tx, bytes | str) else
                                                  {"gas": PENDING_GAS, **tx}), offset]
                                        for tx, offset in txs])
        head = self.head
        for number in range(head - depth + 1, head + 1):
            for receipt in self.w3.eth.get_block_receipts(number):
                if receipt["status"] != 1:
                    raise TxFailed(f"transaction {receipt['transactionHash'].to_0x_hex()} "
                                   f"put into block {number} by anvil_reorg reverted")

    def snapshot(self) -> str:
        """Save the chain's state; an id for :meth:`revert`."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        """Go back to a snapshot (which is used up, with all taken after it)."""
        if not self.rpc("evm_revert", snapshot_id):
            raise AnvilError(f"no snapshot {snapshot_id} to revert to (each reverts once)")

    # - stop -

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of anvil's log, on one line."""
        return _tail(self.log_path, lines)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; harmless when stopped already."""
        self._session.close()
        _terminate(self.process, timeout_s)

    def __enter__(self) -> Anvil:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


# --- contracts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artefact:
    """A compiled contract: its ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: HexStr


def load_artefact(name: str) -> Artefact:
    """One of :data:`ARTEFACTS` (Uniswap's builds give the bytecode without 0x, OpenZeppelin's
    hardhat artefacts with it)."""
    path = NODE_MODULES / ARTEFACTS[name]
    if not path.is_file():
        raise AnvilError(f"contract artefact {path} is missing: {INSTALL_HINT}")
    data = json.loads(path.read_text())
    bytecode = data.get("bytecode") or data["evm"]["bytecode"]["object"]
    return Artefact(name, data["abi"], HexStr("0x" + bytecode.removeprefix("0x")))


def deploy(anvil: Anvil, name: str, sender: ChecksumAddress, *args: Any) -> Contract:
    """Deploy an artefact with constructor ``args`` (automine must be on)."""
    if not anvil.automine:
        raise AnvilError(f"deploying {name} needs its address: turn automine on first")
    artefact = load_artefact(name)
    factory = anvil.w3.eth.contract(abi=artefact.abi, bytecode=artefact.bytecode)
    receipt = anvil.transact(factory.constructor(*args), sender).mined()
    address = receipt["contractAddress"]
    assert address is not None
    return anvil.w3.eth.contract(address=address, abi=artefact.abi)


# a token contract or its address (or its pool's address: the pool's token is meant)
Token: TypeAlias = Contract | str


class Uniswap:
    """WETH9, UniswapV2Factory and UniswapV2Router02 on an anvil chain, and trading through the
    router. Pools pair a token with WETH."""

    def __init__(self, anvil: Anvil, weth: Contract, factory: Contract,
                 router: Contract) -> None:
        self.anvil, self.weth, self.factory, self.router = anvil, weth, factory, router
        self._pair = load_artefact("UniswapV2Pair")
        self._token_abi = load_artefact("ERC20PresetMinterPauser").abi
        self._pairs: dict[str, ChecksumAddress] = {}  # pool address -> its token

    @classmethod
    def deploy(cls, anvil: Anvil, deployer: ChecksumAddress | None = None,
               weth_at: str | None = MAINNET_WETH) -> Uniswap:
        """Deploy the three contracts from ``deployer`` (the first account by default); the
        factory's fee setter is the deployer. WETH9's code is placed at ``weth_at`` (by
        default mainnet's WETH address, which chainwatch's DEX features price against, as
        on a fork of mainnet; its name and symbol are then empty, which nothing reads), or
        left where it was deployed (None)."""
        deployer = deployer or anvil.accounts[0]
        weth = deploy(anvil, "WETH9", deployer)
        if weth_at is not None:
            code = anvil.rpc("eth_getCode", weth.address, "latest")
            anvil.rpc("anvil_setCode", weth_at, code)
            weth = anvil.w3.eth.contract(address=Web3.to_checksum_address(weth_at),
                                         abi=weth.abi)
        factory = deploy(anvil, "UniswapV2Factory", deployer, deployer)
        router = deploy(anvil, "UniswapV2Router02", deployer, factory.address, weth.address)
        return cls(anvil, weth, factory, router)

    # - contracts and reads -

    def token(self, token: Token) -> Contract:
        """The ERC20 contract of a token (or of a pool's token)."""
        return self.anvil.w3.eth.contract(address=self._token_address(token),
                                          abi=self._token_abi)

    def pair_address(self, token: Token) -> ChecksumAddress:
        """The token's WETH pool's address (CREATE2: known before the pool exists)."""
        token_a, weth = self._token_address(token), self.weth.address
        token0, token1 = sorted((token_a, weth), key=lambda address: int(address, 16))
        salt = Web3.keccak(HexBytes(token0) + HexBytes(token1))
        init_code_hash = Web3.keccak(hexstr=self._pair.bytecode)
        raw = Web3.keccak(b"\xff" + HexBytes(self.factory.address) + salt + init_code_hash)
        return Web3.to_checksum_address(raw[12:])

    def pair(self, token: Token) -> Contract:
        """The UniswapV2Pair contract of the token's WETH pool."""
        return self.anvil.w3.eth.contract(address=self.pair_address(token),
                                          abi=self._pair.abi)

    def reserves(self, token: Token) -> tuple[int, int]:
        """The pool's reserves: (token, WETH)."""
        pair = self.pair(token)
        reserve0, reserve1, _ = pair.functions.getReserves().call()
        token_is_0 = pair.functions.token0().call() == self._token_address(token)
        return (reserve0, reserve1) if token_is_0 else (reserve1, reserve0)

    def balance_of(self, token: Token, account: ChecksumAddress) -> int:
        """The account's balance of the token."""
        return int(self.token(token).functions.balanceOf(account).call())

    # - sending -

    def new_token(self, name: str, symbol: str, supply: int, owner: ChecksumAddress) -> Contract:
        """Deploy an ERC20PresetMinterPauser from ``owner`` (its admin and minter) and mint it
        ``supply``."""
        token = deploy(self.anvil, "ERC20PresetMinterPauser", owner, name, symbol)
        self.anvil.transact(token.functions.mint(owner, supply), owner)
        return token

    def create_pool(self, token: Token, weth_amount: int, token_amount: int,
                    by: ChecksumAddress) -> ChecksumAddress:
        """``router.addLiquidityETH``: create the token's WETH pool (or add to it) with these
        amounts from ``by``, who gets the LP tokens; the pool's address."""
        token_contract = self.token(token)
        self._approve(token_contract, by, token_amount)
        self.anvil.transact(self.router.functions.addLiquidityETH(
            token_contract.address, token_amount, 0, 0, by, DEADLINE), by, weth_amount)
        pair = self.pair_address(token_contract)
        self._pairs[pair] = token_contract.address
        return pair

    def buy_request(self, token: Token, account: ChecksumAddress, eth: int) -> TxParams:
        """The transaction :meth:`buy` sends, unsent (for :meth:`Anvil.reorg`)."""
        path = [self.weth.address, self._token_address(token)]
        data = self.router.encode_abi("swapExactETHForTokens", args=[0, path, account, DEADLINE])
        return {"from": account, "to": self.router.address, "data": HexStr(data),
                "value": Wei(eth)}

    def buy(self, token: Token, account: ChecksumAddress, eth: int) -> Tx:
        """Swap ``eth`` wei for as many tokens as the pool gives (``swapExactETHForTokens``)."""
        return self.anvil.send(self.buy_request(token, account, eth))

    def sell(self, token: Token, account: ChecksumAddress, amount: int) -> Tx:
        """Swap ``amount`` of the token for ether (``swapExactTokensForETH``; approving the
        router first when needed)."""
        token_contract = self.token(token)
        self._approve(token_contract, account, amount)
        path = [token_contract.address, self.weth.address]
        return self.anvil.transact(self.router.functions.swapExactTokensForETH(
            amount, 0, path, account, DEADLINE), account)

    def remove_liquidity(self, token: Token, by: ChecksumAddress, share: float = 1.0) -> Tx:
        """Burn ``share`` of ``by``'s LP tokens for their token and ether
        (``removeLiquidityETH``); all of them is the rug pull."""
        if not 0 < share <= 1:
            raise ValueError(f"share {share!r}: give a fraction in (0, 1]")
        pair, token_address = self.pair(token), self._token_address(token)
        liquidity = int(pair.functions.balanceOf(by).call() * Fraction(share))
        self._approve(pair, by, liquidity)
        return self.anvil.transact(self.router.functions.removeLiquidityETH(
            token_address, liquidity, 0, 0, by, DEADLINE), by)

    def _approve(self, token: Contract, owner: ChecksumAddress, amount: int) -> None:
        """Let the router spend ``amount`` of ``owner``'s token (unlimited), unless it may."""
        if token.functions.allowance(owner, self.router.address).call() < amount:
            self.anvil.transact(token.functions.approve(self.router.address, 2**256 - 1), owner)

    def _token_address(self, token: Token) -> ChecksumAddress:
        address = Web3.to_checksum_address(token if isinstance(token, str) else token.address)
        return self._pairs.get(address, address)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(name="anvil")
def anvil_fixture(tmp_path: Path) -> Iterator[Anvil]:
    """A fresh anvil chain for one test; block ``n`` at ``GENESIS_TIMESTAMP +
    SECONDS_PER_BLOCK * n``."""
    try:
        node = start_anvil(tmp_path, genesis_timestamp=GENESIS_TIMESTAMP,
                           seconds_per_block=SECONDS_PER_BLOCK)
    except AnvilError as exc:
        pytest.fail(str(exc), pytrace=False)
    with node:
        yield node


@pytest.fixture(name="uniswap")
def uniswap_fixture(anvil: Anvil) -> Uniswap:
    """WETH9, the factory and the router, deployed on the test's chain."""
    return Uniswap.deploy(anvil)

