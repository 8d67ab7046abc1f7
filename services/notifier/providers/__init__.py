"""Customer-message provider adapters: SMS (Aliyun, Tencent Cloud), WeChat, e-mail."""
