//! Reply frames sent by the platform (server) side.
//!
//! * [`build_data_ack`]: CN=9014 data reply, sent when a data upload's Flag
//!   has the A bit set. CP is empty (`CP=&&&&`).
//! * [`build_qn_rtn`]: CN=9011 request reply with `QnRtn=<code>`; this crate's
//!   server uses `QnRtn=9` ("CRC wrong") as its NAK for bad-CRC frames.
//! * [`build_exe_rtn`]: CN=9012 execution result with `ExeRtn=<code>`.
//! * [`build_notify_ack`]: CN=9013 notification reply.
//!
//! Every reply copies QN, PW and MN from the request, uses ST=91 (system
//! interaction) and `Flag` = the request's version bits with A and D clear
//! (so a 2017 request gets `Flag=4`, a 2025 one `Flag=8`, a 2005 one `Flag=0`).

use crate::cn;
use crate::frame::{Flag, Frame};

/// `QnRtn` codes (CN=9011).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QnRtn {
    /// 1: ready to execute.
    Ready,
    /// 2: rejected.
    Rejected,
    /// 3: PW wrong.
    PwError,
    /// 4: MN wrong.
    MnError,
    /// 5: ST wrong.
    StError,
    /// 6: Flag wrong.
    FlagError,
    /// 7: QN wrong.
    QnError,
    /// 8: CN wrong.
    CnError,
    /// 9: CRC wrong.
    CrcError,
    /// 100: unknown.
    Unknown,
}

impl QnRtn {
    pub fn code(self) -> u16 {
        match self {
            QnRtn::Ready => 1,
            QnRtn::Rejected => 2,
            QnRtn::PwError => 3,
            QnRtn::MnError => 4,
            QnRtn::StError => 5,
            QnRtn::FlagError => 6,
            QnRtn::QnError => 7,
            QnRtn::CnError => 8,
            QnRtn::CrcError => 9,
            QnRtn::Unknown => 100,
        }
    }
}

/// `ExeRtn` codes (CN=9012).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExeRtn {
    /// 1: success.
    Success,
    /// 2: failed, reason unknown.
    Failed,
    /// 3: condition error.
    ConditionError,
    /// 4: timeout.
    Timeout,
    /// 5: busy.
    Busy,
    /// 6: fault.
    Fault,
    /// 100: no data.
    NoData,
}

impl ExeRtn {
    pub fn code(self) -> u16 {
        match self {
            ExeRtn::Success => 1,
            ExeRtn::Failed => 2,
            ExeRtn::ConditionError => 3,
            ExeRtn::Timeout => 4,
            ExeRtn::Busy => 5,
            ExeRtn::Fault => 6,
            ExeRtn::NoData => 100,
        }
    }
}

fn reply_to(req: &Frame, cn: &str) -> Frame {
    let mut f = Frame::new("91", cn, req.mn.clone());
    f.qn = req.qn.clone();
    f.pw = req.pw.clone();
    f.version = req.version;
    f.flag = Some(Flag::new(req.version, false, false));
    f
}

/// CN=9014 data reply (`CP=&&&&`).
pub fn build_data_ack(req: &Frame) -> Frame {
    reply_to(req, cn::DATA_REPLY)
}

/// CN=9011 request reply with `QnRtn=<code>`.
pub fn build_qn_rtn(req: &Frame, code: QnRtn) -> Frame {
    let mut f = reply_to(req, cn::REQUEST_REPLY);
    f.cp.insert("QnRtn", &code.code().to_string());
    f
}

/// CN=9012 execution result with `ExeRtn=<code>`.
pub fn build_exe_rtn(req: &Frame, code: ExeRtn) -> Frame {
    let mut f = reply_to(req, cn::EXECUTION_RESULT);
    f.cp.insert("ExeRtn", &code.code().to_string());
    f
}

/// CN=9013 notification reply (`CP=&&&&`).
pub fn build_notify_ack(req: &Frame) -> Frame {
    reply_to(req, cn::NOTIFY_REPLY)
}

/// Whether a received frame should get a 9014 data reply: its Flag has the
/// A bit set and it is not itself an interaction frame (CN 9xxx), so replies
/// never answer replies.
pub fn needs_data_ack(frame: &Frame) -> bool {
    frame.ack_required() && !frame.cn.starts_with('9')
}
