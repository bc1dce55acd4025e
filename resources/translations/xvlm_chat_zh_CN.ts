<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="zh_CN">
<context>
    <name>ChatController</name>
    <message>
        <source>New chat</source>
        <translation>新对话</translation>
    </message>
    <message>
        <source>No model is loaded, so there is no answer. {reason}</source>
        <translation>未加载模型，因此没有回答。{reason}</translation>
    </message>
</context>
<context>
    <name>ChatList</name>
    <message>
        <source>Rename chat</source>
        <translation>重命名对话</translation>
    </message>
    <message>
        <source>Chat name</source>
        <translation>对话名称</translation>
    </message>
    <message>
        <source>&amp;Name:</source>
        <translation>名称(&amp;N)：</translation>
    </message>
    <message>
        <source>New chat</source>
        <translation>新对话</translation>
    </message>
    <message>
        <source>New chat (Ctrl+N)</source>
        <translation>新对话 (Ctrl+N)</translation>
    </message>
    <message>
        <source>Search chats</source>
        <translation>搜索对话</translation>
    </message>
    <message>
        <source>Chats</source>
        <translation>对话</translation>
    </message>
    <message>
        <source>answer version {number}</source>
        <translation>回答的第 {number} 版</translation>
    </message>
    <message>
        <source>No chats yet.</source>
        <translation>还没有对话。</translation>
    </message>
    <message>
        <source>Undo</source>
        <translation>撤销</translation>
    </message>
    <message>
        <source>Undo delete</source>
        <translation>撤销删除</translation>
    </message>
    <message>
        <source>Rename…</source>
        <translation>重命名…</translation>
    </message>
    <message>
        <source>Delete</source>
        <translation>删除</translation>
    </message>
    <message>
        <source>Nothing found.</source>
        <translation>没有找到。</translation>
    </message>
    <message>
        <source>Untitled</source>
        <translation>未命名</translation>
    </message>
    <message>
        <source>Pinned · </source>
        <translation>已置顶 · </translation>
    </message>
    <message>
        <source>An answer is being written</source>
        <translation>正在生成回答</translation>
    </message>
    <message>
        <source>{count} messages · {date}</source>
        <translation>{count} 条消息 · {date}</translation>
    </message>
    <message>
        <source>Unpin</source>
        <translation>取消置顶</translation>
    </message>
    <message>
        <source>Pin to the top</source>
        <translation>置顶</translation>
    </message>
    <message>
        <source>the chat</source>
        <translation>该对话</translation>
    </message>
    <message>
        <source>Deleted “{title}”.</source>
        <translation>已删除“{title}”。</translation>
    </message>
</context>
<context>
    <name>ChatStore</name>
    <message>
        <source>The chat history at {path} could not be read: {reason}.</source>
        <translation>无法读取位于 {path} 的聊天记录：{reason}。</translation>
    </message>
    <message>
        <source>The chat history at {path} is not a file; move it away and start the app again to begin a new history.</source>
        <translation>位于 {path} 的聊天记录不是文件；请将其移走，然后重新启动应用以开始新的聊天记录。</translation>
    </message>
    <message>
        <source>Another XVLM Chat window is using the chat history in {folder}. Close it first, or open the history read-only.</source>
        <translation>另一个 XVLM Chat 窗口正在使用 {folder} 中的聊天记录。请先关闭该窗口，或以只读方式打开聊天记录。</translation>
    </message>
    <message>
        <source>The folder {folder} cannot be written ({reason}).</source>
        <translation>无法写入文件夹 {folder}（{reason}）。</translation>
    </message>
    <message>
        <source>Could not open the chat history in {folder}: {reason}.</source>
        <translation>无法打开 {folder} 中的聊天记录：{reason}。</translation>
    </message>
    <message>
        <source>A new chat history at {path} could not be started: {reason}.</source>
        <translation>无法在 {path} 新建聊天记录：{reason}。</translation>
    </message>
    <message>
        <source>The chat history at {path} cannot use write-ahead logging (mode {mode}).</source>
        <translation>位于 {path} 的聊天记录无法使用预写日志（模式 {mode}）。</translation>
    </message>
    <message>
        <source>Could not open the chat history at {path}: {reason}.</source>
        <translation>无法打开位于 {path} 的聊天记录：{reason}。</translation>
    </message>
    <message>
        <source>There is no chat history at {path} yet.</source>
        <translation>{path} 处还没有聊天记录。</translation>
    </message>
    <message>
        <source>The chat history at {path} cannot be read: it is not a database.</source>
        <translation>无法读取位于 {path} 的聊天记录：它不是数据库。</translation>
    </message>
    <message>
        <source>The chat history at {path} has not been updated for this version of XVLM Chat yet; close the other XVLM Chat window and start this one again.</source>
        <translation>位于 {path} 的聊天记录尚未针对此版本的 XVLM Chat 更新；请关闭另一个 XVLM Chat 窗口，然后重新启动本窗口。</translation>
    </message>
    <message>
        <source>The chat history at {path} cannot be read: {reason}.</source>
        <translation>无法读取位于 {path} 的聊天记录：{reason}。</translation>
    </message>
    <message>
        <source>The chat history at {path} was written by a newer version of XVLM Chat (schema {version}; this version knows up to {known}). Update the app to open it.</source>
        <translation>位于 {path} 的聊天记录由更新版本的 XVLM Chat 写入（结构版本 {version}；此版本最高支持 {known}）。请更新应用后再打开。</translation>
    </message>
    <message>
        <source>There is no chat {id} in the history.</source>
        <translation>聊天记录中没有对话 {id}。</translation>
    </message>
    <message>
        <source>The chat history is closed.</source>
        <translation>聊天记录已关闭。</translation>
    </message>
    <message>
        <source>The chat history at {path} is open read-only in this window; changes are not saved.</source>
        <translation>位于 {path} 的聊天记录在此窗口中以只读方式打开；更改不会保存。</translation>
    </message>
    <message>
        <source>The chat history at {path} could not be written: {reason}.</source>
        <translation>无法写入位于 {path} 的聊天记录：{reason}。</translation>
    </message>
    <message>
        <source>There is no message {id} in the history.</source>
        <translation>聊天记录中没有消息 {id}。</translation>
    </message>
    <message>
        <source>only the last answer can have other versions.</source>
        <translation>只有最后一条回答可以有其他版本。</translation>
    </message>
    <message>
        <source>message {index} holds a broken character (a lone surrogate such as {example}).</source>
        <translation>第 {index} 条消息含有损坏的字符（孤立的代理码位，例如 {example}）。</translation>
    </message>
    <message>
        <source>message {index} has {count} images, and the model reads at most {limit} in one message.</source>
        <translation>第 {index} 条消息有 {count} 张图片，而模型每条消息最多读取 {limit} 张。</translation>
    </message>
    <message>
        <source>{path} (message {index})</source>
        <translation>{path}（第 {index} 条消息）</translation>
    </message>
    <message>
        <source>{path} is not a valid chat export: {reason}</source>
        <translation>{path} 不是有效的聊天导出文件：{reason}</translation>
    </message>
    <message>
        <source>{where}: image {name} does not exist.</source>
        <translation>{where}：图片 {name} 不存在。</translation>
    </message>
    <message>
        <source>An image of this chat cannot be exported: {reason}.</source>
        <translation>此聊天中的一张图片无法导出：{reason}。</translation>
    </message>
</context>
<context>
    <name>Composer</name>
    <message>
        <source>Images (*.png *.jpg *.jpeg *.gif *.bmp *.webp *.tif *.tiff);;All files (*)</source>
        <translation>图片 (*.png *.jpg *.jpeg *.gif *.bmp *.webp *.tif *.tiff);;所有文件 (*)</translation>
    </message>
    <message>
        <source>{name}: not an image this app can read.</source>
        <translation>{name}：不是本应用能读取的图片。</translation>
    </message>
    <message>
        <source>{name}: no such file.</source>
        <translation>{name}：文件不存在。</translation>
    </message>
    <message>
        <source>Pasted image {number}</source>
        <translation>粘贴的图片 {number}</translation>
    </message>
    <message>
        <source>Ask about the image…  (Enter to send, Shift+Enter for a new line)</source>
        <translation>询问关于图片的问题…（Enter 发送，Shift+Enter 换行）</translation>
    </message>
    <message>
        <source>Message</source>
        <translation>消息</translation>
    </message>
    <message>
        <source>Remove the image</source>
        <translation>移除图片</translation>
    </message>
    <message>
        <source>Attach images (or drop or paste them)</source>
        <translation>附加图片（也可拖放或粘贴）</translation>
    </message>
    <message>
        <source>Attach images</source>
        <translation>附加图片</translation>
    </message>
    <message>
        <source>{name} was not attached: a message can carry at most {limit} images, as each takes {positions} of the {context} positions the model reads at once.</source>
        <translation>未附加 {name}：每条消息最多可带 {limit} 张图片，因为每张图片要占用模型一次能读取的 {context} 个位置中的 {positions} 个。</translation>
    </message>
    <message>
        <source>{name}
Checking…</source>
        <translation>{name}
正在检查…</translation>
    </message>
    <message>
        <source>Attached image {name}, checking</source>
        <translation>已附加图片 {name}，正在检查</translation>
    </message>
    <message>
        <source>Attached image {name}</source>
        <translation>已附加图片 {name}</translation>
    </message>
    <message>
        <source>Editing an earlier message: sending replaces it and everything after it.</source>
        <translation>正在编辑之前的消息：发送后将替换这条消息及其后的所有内容。</translation>
    </message>
    <message>
        <source>Cancel</source>
        <translation>取消</translation>
    </message>
    <message>
        <source>Cancel editing</source>
        <translation>取消编辑</translation>
    </message>
    <message>
        <source>Notice</source>
        <translation>提示</translation>
    </message>
    <message>
        <source>Stop the answer (Esc)</source>
        <translation>停止回答 (Esc)</translation>
    </message>
    <message>
        <source>Send (Enter)</source>
        <translation>发送 (Enter)</translation>
    </message>
    <message>
        <source>Stop</source>
        <translation>停止</translation>
    </message>
    <message>
        <source>Send</source>
        <translation>发送</translation>
    </message>
    <message>
        <source>The pasted image could not be read.</source>
        <translation>无法读取粘贴的图片。</translation>
    </message>
    <message>
        <source>The image could not be saved for the model ({reason}).</source>
        <translation>无法为模型保存图片（{reason}）。</translation>
    </message>
    <message>
        <source>Only images on this computer can be attached. Save the image first, or copy it and paste it here.</source>
        <translation>只能附加本机上的图片。请先保存图片，或复制后粘贴到这里。</translation>
    </message>
    <message>
        <source>{name} cannot be kept with the chat ({reason}). Check the free disk space and that the data folder can be written.</source>
        <translation>无法将 {name} 保存到对话中（{reason}）。请检查磁盘剩余空间，以及数据文件夹是否可写。</translation>
    </message>
</context>
<context>
    <name>ConversationView</name>
    <message>
        <source>Stopped</source>
        <translation>已停止</translation>
    </message>
    <message>
        <source>Interrupted: the app closed before the answer was finished</source>
        <translation>已中断：回答完成前应用已关闭</translation>
    </message>
    <message>
        <source>{seconds} s to first token</source>
        <translation>首个 token 用时 {seconds} 秒</translation>
    </message>
    <message>
        <source>{speed} tokens/s</source>
        <translation>{speed} token/秒</translation>
    </message>
    <message>
        <source>{count} tokens</source>
        <translation>{count} 个 token</translation>
    </message>
    <message>
        <source>cut at the length limit</source>
        <translation>已达到长度上限而截断</translation>
    </message>
    <message>
        <source>The first message no longer fits and was left out.</source>
        <translation>第一条消息已超出模型可读的长度，未包含在内。</translation>
    </message>
    <message>
        <source>The first {count} messages no longer fit and were left out.</source>
        <translation>前 {count} 条消息已超出模型可读的长度，未包含在内。</translation>
    </message>
    <message>
        <source>Regenerate answer: another one, sampled at temperature {temperature} and top-p {top_p} with a new seed (at this chat&apos;s temperature 0 every answer is the same)</source>
        <translation>重新生成回答：以温度 {temperature}、top-p {top_p} 和新的随机种子重新采样（此对话的温度为 0 时，每次回答都相同）</translation>
    </message>
    <message>
        <source>Regenerate answer: another one, sampled at temperature {temperature} with a new seed</source>
        <translation>重新生成回答：以温度 {temperature} 和新的随机种子重新采样</translation>
    </message>
    <message>
        <source>Copy code</source>
        <translation>复制代码</translation>
    </message>
    <message>
        <source>Whole message</source>
        <translation>完整消息</translation>
    </message>
    <message>
        <source>(image missing)</source>
        <translation>（图片缺失）</translation>
    </message>
    <message>
        <source>Click to view the image large</source>
        <translation>点击查看大图</translation>
    </message>
    <message>
        <source>Attached image</source>
        <translation>附加的图片</translation>
    </message>
    <message>
        <source>This image can no longer be read.</source>
        <translation>已无法读取这张图片。</translation>
    </message>
    <message>
        <source>Continue in a new chat</source>
        <translation>在新对话中继续</translation>
    </message>
    <message>
        <source>Start a new chat with this chat&apos;s latest images attached</source>
        <translation>新建一个对话，并附上本对话最新的图片</translation>
    </message>
    <message>
        <source>Left out</source>
        <translation>已省略</translation>
    </message>
    <message>
        <source>Previous version of this answer</source>
        <translation>这个回答的上一个版本</translation>
    </message>
    <message>
        <source>Next version of this answer</source>
        <translation>这个回答的下一个版本</translation>
    </message>
    <message>
        <source>Version {number} of {count}</source>
        <translation>第 {number} 个版本，共 {count} 个</translation>
    </message>
    <message>
        <source>Your message</source>
        <translation>你的消息</translation>
    </message>
    <message>
        <source>Answer</source>
        <translation>回答</translation>
    </message>
    <message>
        <source>Copy message</source>
        <translation>复制消息</translation>
    </message>
    <message>
        <source>Edit and resend</source>
        <translation>编辑并重新发送</translation>
    </message>
    <message>
        <source>Regenerate answer</source>
        <translation>重新生成回答</translation>
    </message>
    <message>
        <source>Show less</source>
        <translation>收起</translation>
    </message>
    <message>
        <source>Show more</source>
        <translation>展开全文</translation>
    </message>
    <message>
        <source>The model no longer sees this message: the chat has outgrown what it can read at once.</source>
        <translation>模型已看不到这条消息：对话长度超出了它一次能读取的范围。</translation>
    </message>
    <message>
        <source>Waiting for the model to load…</source>
        <translation>正在等待模型加载…</translation>
    </message>
    <message>
        <source>Reading…</source>
        <translation>正在读取…</translation>
    </message>
    <message>
        <source>Conversation</source>
        <translation>对话内容</translation>
    </message>
    <message>
        <source>&lt;h2&gt;Ask about an image&lt;/h2&gt;&lt;p&gt;Drop an image anywhere in this window, paste one, or use the picture button below. Then type a question and press Enter.&lt;/p&gt;</source>
        <translation>&lt;h2&gt;就图片提问&lt;/h2&gt;&lt;p&gt;将图片拖放到窗口中任意位置、粘贴图片，或使用下方的图片按钮。然后输入问题并按 Enter。&lt;/p&gt;</translation>
    </message>
</context>
<context>
    <name>ErrorText</name>
    <message>
        <source>Something went wrong. The details are in the log: Help → Open Log Folder.</source>
        <translation>出了点问题。详细信息见日志：帮助 → 打开日志文件夹。</translation>
    </message>
    <message>
        <source>The model&apos;s files cannot be used. Choose a model folder in Settings › Model.</source>
        <translation>模型的文件无法使用。请在“设置 › 模型”中选择一个模型文件夹。</translation>
    </message>
    <message>
        <source>The model is not downloaded yet. Choose a folder that holds it in Settings › Model.</source>
        <translation>模型尚未下载。请在“设置 › 模型”中选择包含它的文件夹。</translation>
    </message>
    <message>
        <source>The vision tower cannot be found or used. Choose its folder in Settings › Vision tower.</source>
        <translation>找不到视觉编码器或无法使用。请在“设置 › 视觉编码器”中选择它的文件夹。</translation>
    </message>
    <message>
        <source>This device cannot be used here. Choose another in Settings › Device.</source>
        <translation>此设备在这里无法使用。请在“设置 › 设备”中选择其他设备。</translation>
    </message>
    <message>
        <source>This number format cannot be used here. Choose another in Settings › Number format.</source>
        <translation>此数值格式在这里无法使用。请在“设置 › 数值格式”中选择其他格式。</translation>
    </message>
    <message>
        <source>The model ran out of memory. Close other programs, or in Settings choose 8-bit weights, a smaller number format or the CPU, or start a new chat (shorter conversations need less memory).</source>
        <translation>模型内存不足。请关闭其他程序，或在“设置”中选择 8 位权重、更小的数值格式或 CPU，也可以新建对话（对话越短，占用内存越少）。</translation>
    </message>
    <message>
        <source>The conversation is too long for the model. Shorten your message or start a new chat.</source>
        <translation>对话太长，超出了模型的容量。请缩短消息，或开始新对话。</translation>
    </message>
    <message>
        <source>This picture cannot be used. Choose another one.</source>
        <translation>这张图片无法使用。请换一张。</translation>
    </message>
    <message>
        <source>The model hub cannot be reached. Check that this computer is online, or use a mirror.</source>
        <translation>无法连接模型仓库。请检查这台电脑是否联网，或使用镜像。</translation>
    </message>
    <message>
        <source>The model hub&apos;s address does not lead to a model hub. Check the mirror&apos;s address.</source>
        <translation>模型仓库地址指向的不是模型仓库。请检查镜像地址。</translation>
    </message>
    <message>
        <source>The model hub wants an access token. Set HF_TOKEN to a token of an account that may download this model.</source>
        <translation>模型仓库需要访问令牌。请将 HF_TOKEN 设置为有权下载此模型的账户的令牌。</translation>
    </message>
    <message>
        <source>There is not enough free disk space. Free up space, or choose a folder on another disk.</source>
        <translation>磁盘剩余空间不足。请释放空间，或选择其他磁盘上的文件夹。</translation>
    </message>
    <message>
        <source>This folder cannot be written to. Choose a folder you can write to.</source>
        <translation>无法写入此文件夹。请选择一个可写入的文件夹。</translation>
    </message>
    <message>
        <source>The download did not go through. Try again; if this repeats, use a mirror.</source>
        <translation>下载未能完成。请重试；如果反复出现，请使用镜像。</translation>
    </message>
    <message>
        <source>The model server is not answering. Check that it is running and that its address in Settings is right, then press Retry.</source>
        <translation>模型服务器没有响应。请检查它是否正在运行，以及“设置”中的地址是否正确，然后按“重试”。</translation>
    </message>
</context>
<context>
    <name>FirstRunPage</name>
    <message>
        <source>Problem</source>
        <translation>问题</translation>
    </message>
    <message>
        <source>Details</source>
        <translation>详细信息</translation>
    </message>
    <message>
        <source>Welcome to XVLM Chat</source>
        <translation>欢迎使用 XVLM Chat</translation>
    </message>
    <message>
        <source>To answer questions about images, the app needs the Xmodel-VLM model on this computer. It is downloaded once; after that everything runs offline, on this machine.</source>
        <translation>要回答关于图片的问题，本应用需要在这台电脑上安装 Xmodel-VLM 模型。模型只需下载一次，之后一切都在本机离线运行。</translation>
    </message>
    <message>
        <source>{address} (or a mirror such as https://hf-mirror.com)</source>
        <translation>{address}（或镜像，例如 https://hf-mirror.com）</translation>
    </message>
    <message>
        <source>Model hub address or mirror</source>
        <translation>模型仓库地址或镜像</translation>
    </message>
    <message>
        <source>Model:</source>
        <translation>模型：</translation>
    </message>
    <message>
        <source>From:</source>
        <translation>来源：</translation>
    </message>
    <message>
        <source>Size:</source>
        <translation>大小：</translation>
    </message>
    <message>
        <source>Saved to:</source>
        <translation>保存到：</translation>
    </message>
    <message>
        <source>Free space:</source>
        <translation>可用空间：</translation>
    </message>
    <message>
        <source>Download status</source>
        <translation>下载状态</translation>
    </message>
    <message>
        <source>Download progress</source>
        <translation>下载进度</translation>
    </message>
    <message>
        <source>&amp;Download</source>
        <translation>下载(&amp;D)</translation>
    </message>
    <message>
        <source>&amp;Cancel</source>
        <translation>取消(&amp;C)</translation>
    </message>
    <message>
        <source>&amp;Retry</source>
        <translation>重试(&amp;R)</translation>
    </message>
    <message>
        <source>&amp;Use a folder I already have…</source>
        <translation>使用已有的文件夹(&amp;U)…</translation>
    </message>
    <message>
        <source>Use a model &amp;server…</source>
        <translation>使用模型服务器(&amp;S)…</translation>
    </message>
    <message>
        <source>Answer with the model on another computer (xvlm serve, vLLM, LM Studio…): nothing is downloaded</source>
        <translation>使用另一台计算机上的模型回答（xvlm serve、vLLM、LM Studio…）：无需下载</translation>
    </message>
    <message>
        <source> and </source>
        <translation> 和 </translation>
    </message>
    <message>
        <source>{model}, from {repos}</source>
        <translation>{model}，来自 {repos}</translation>
    </message>
    <message>
        <source>Asking the model hub…</source>
        <translation>正在询问模型仓库…</translation>
    </message>
    <message>
        <source>Checking what to download…</source>
        <translation>正在检查需要下载的内容…</translation>
    </message>
    <message>
        <source>Starting the download…</source>
        <translation>正在开始下载…</translation>
    </message>
    <message>
        <source>Paused. Press Resume to continue where it stopped.</source>
        <translation>已暂停。按“继续”可从中断处接着下载。</translation>
    </message>
    <message>
        <source>&amp;Resume</source>
        <translation>继续(&amp;R)</translation>
    </message>
    <message>
        <source>Downloaded.</source>
        <translation>下载完成。</translation>
    </message>
    <message>
        <source>Stopping…</source>
        <translation>正在停止…</translation>
    </message>
    <message>
        <source>Stopped asking the model hub. Press Retry to ask again, or use a folder that already holds the model.</source>
        <translation>已停止询问模型仓库。按“重试”再次询问，或使用已包含模型的文件夹。</translation>
    </message>
    <message>
        <source>Not known: the model hub has not said</source>
        <translation>未知：模型仓库尚未告知</translation>
    </message>
    <message>
        <source>Choose the folder that holds the model</source>
        <translation>选择包含模型的文件夹</translation>
    </message>
    <message>
        <source>Checking {folder}…</source>
        <translation>正在检查 {folder}…</translation>
    </message>
    <message>
        <source>{model}: {count} files from {repos}</source>
        <translation>{model}：{count} 个文件，来自 {repos}</translation>
    </message>
    <message>
        <source>{missing} left to download (of {total}; the rest is already here)</source>
        <translation>还需下载 {missing}（共 {total}，其余已在本机）</translation>
    </message>
    <message>
        <source>There is not enough free space there: {size} are needed. Free some space, then press Retry.</source>
        <translation>那里的可用空间不足：需要 {size}。请释放一些空间，然后按“重试”。</translation>
    </message>
    <message>
        <source>Ready to download.</source>
        <translation>可以开始下载。</translation>
    </message>
    <message>
        <source>{done} of {total}</source>
        <translation>{done} / {total}</translation>
    </message>
    <message>
        <source>about {time} left</source>
        <translation>约剩 {time}</translation>
    </message>
    <message>
        <source>Can&apos;t reach the model hub. Trying again now…</source>
        <translation>无法连接模型仓库。正在重试…</translation>
    </message>
    <message>
        <source>Can&apos;t reach the model hub. Trying again in {seconds} s… Press Cancel to stop, or use a folder that already holds the model.</source>
        <translation>无法连接模型仓库。{seconds} 秒后重试… 按“取消”停止，或使用已包含模型的文件夹。</translation>
    </message>
</context>
<context>
    <name>History</name>
    <message>
        <source>Chats in this window are not saved.</source>
        <translation>此窗口中的对话不会被保存。</translation>
    </message>
    <message>
        <source>The chat history could not be read, so a new one was started. The old file was kept as {path}.</source>
        <translation>无法读取聊天记录，已新建一份。旧文件保留为 {path}。</translation>
    </message>
    <message>
        <source>chat {id}: {problems}</source>
        <translation>对话 {id}：{problems}</translation>
    </message>
    <message>
        <source>{count} more</source>
        <translation>另有 {count} 个</translation>
    </message>
    <message>
        <source>Some entries of the chat history are damaged ({details}). Those chats are shown with what could be read; the other chats are not affected.</source>
        <translation>聊天记录中有部分条目已损坏（{details}）。这些对话按能读出的内容显示；其他对话不受影响。</translation>
    </message>
    <message>
        <source>The chat could not be exported</source>
        <translation>无法导出对话</translation>
    </message>
    <message>
        <source>The chat could not be imported: the chat history is not being saved in this window.</source>
        <translation>无法导入对话：此窗口不保存聊天记录。</translation>
    </message>
    <message>
        <source>The chat could not be imported</source>
        <translation>无法导入对话</translation>
    </message>
    <message>
        <source>The chat history could not be read</source>
        <translation>无法读取聊天记录</translation>
    </message>
    <message>
        <source>The chat history could not be saved</source>
        <translation>无法保存聊天记录</translation>
    </message>
    <message>
        <source>{what}: {error}</source>
        <translation>{what}：{error}</translation>
    </message>
    <message>
        <source>Another XVLM Chat is using the chat history.</source>
        <translation>另一个 XVLM Chat 正在使用聊天记录。</translation>
    </message>
    <message>
        <source>{reason} This window shows the history read-only. {not_saved}</source>
        <translation>{reason}此窗口以只读方式显示聊天记录。{not_saved}</translation>
    </message>
</context>
<context>
    <name>Language</name>
    <message>
        <source>System</source>
        <translation>跟随系统</translation>
    </message>
</context>
<context>
    <name>LoadStage</name>
    <message>
        <source>Reading the checkpoint…</source>
        <translation>正在读取检查点…</translation>
    </message>
    <message>
        <source>Loading the vision tower…</source>
        <translation>正在加载视觉编码器…</translation>
    </message>
    <message>
        <source>Loading the language model…</source>
        <translation>正在加载语言模型…</translation>
    </message>
    <message>
        <source>Loading the language model with 8-bit weights…</source>
        <translation>正在以 8 位权重加载语言模型…</translation>
    </message>
    <message>
        <source>Loading the language model with 4-bit weights…</source>
        <translation>正在以 4 位权重加载语言模型…</translation>
    </message>
    <message>
        <source>Loading the projector…</source>
        <translation>正在加载投影器…</translation>
    </message>
    <message>
        <source>Converting the language model for llama.cpp (once)…</source>
        <translation>正在为 llama.cpp 转换语言模型（仅此一次）…</translation>
    </message>
    <message>
        <source>Quantizing the language model to 8 bits for llama.cpp (once)…</source>
        <translation>正在为 llama.cpp 将语言模型量化为 8 位（仅此一次）…</translation>
    </message>
    <message>
        <source>Quantizing the language model to 4 bits for llama.cpp (once)…</source>
        <translation>正在为 llama.cpp 将语言模型量化为 4 位（仅此一次）…</translation>
    </message>
    <message>
        <source>Loading the language model into llama.cpp…</source>
        <translation>正在将语言模型载入 llama.cpp…</translation>
    </message>
</context>
<context>
    <name>MainWindow</name>
    <message>
        <source>&amp;System</source>
        <translation>跟随系统(&amp;S)</translation>
    </message>
    <message>
        <source>&amp;Light</source>
        <translation>浅色(&amp;L)</translation>
    </message>
    <message>
        <source>&amp;Dark</source>
        <translation>深色(&amp;D)</translation>
    </message>
    <message>
        <source>Choose Model…</source>
        <translation>选择模型…</translation>
    </message>
    <message>
        <source>Choose Vision Tower…</source>
        <translation>选择视觉编码器…</translation>
    </message>
    <message>
        <source>Choose Device…</source>
        <translation>选择设备…</translation>
    </message>
    <message>
        <source>Choose Precision…</source>
        <translation>选择精度…</translation>
    </message>
    <message>
        <source>{size} GB</source>
        <translation>{size} GB</translation>
    </message>
    <message>
        <source>{size} MB</source>
        <translation>{size} MB</translation>
    </message>
    <message>
        <source>Problem</source>
        <translation>问题</translation>
    </message>
    <message>
        <source>Dismiss</source>
        <translation>关闭</translation>
    </message>
    <message>
        <source>Chat history</source>
        <translation>聊天记录</translation>
    </message>
    <message>
        <source>Show Folder</source>
        <translation>显示文件夹</translation>
    </message>
    <message>
        <source>No model loaded</source>
        <translation>未加载模型</translation>
    </message>
    <message>
        <source>Model</source>
        <translation>模型</translation>
    </message>
    <message>
        <source>Loading the model</source>
        <translation>正在加载模型</translation>
    </message>
    <message>
        <source>Device and precision</source>
        <translation>设备和精度</translation>
    </message>
    <message>
        <source>Memory in use</source>
        <translation>已用内存</translation>
    </message>
    <message>
        <source>Memory the model uses on its device</source>
        <translation>模型在其设备上占用的内存</translation>
    </message>
    <message>
        <source>&amp;File</source>
        <translation>文件(&amp;F)</translation>
    </message>
    <message>
        <source>&amp;New Chat</source>
        <translation>新对话(&amp;N)</translation>
    </message>
    <message>
        <source>&amp;Attach Images…</source>
        <translation>附加图片(&amp;A)…</translation>
    </message>
    <message>
        <source>Export Chat as &amp;Markdown…</source>
        <translation>将对话导出为 &amp;Markdown…</translation>
    </message>
    <message>
        <source>Export Chat as &amp;JSON…</source>
        <translation>将对话导出为 &amp;JSON…</translation>
    </message>
    <message>
        <source>&amp;Import Chat…</source>
        <translation>导入对话(&amp;I)…</translation>
    </message>
    <message>
        <source>&amp;Quit</source>
        <translation>退出(&amp;Q)</translation>
    </message>
    <message>
        <source>&amp;Chat</source>
        <translation>对话(&amp;C)</translation>
    </message>
    <message>
        <source>&amp;Stop Answer</source>
        <translation>停止回答(&amp;S)</translation>
    </message>
    <message>
        <source>&amp;Regenerate Answer</source>
        <translation>重新生成回答(&amp;R)</translation>
    </message>
    <message>
        <source>&amp;Copy Last Answer</source>
        <translation>复制最后的回答(&amp;C)</translation>
    </message>
    <message>
        <source>&amp;View</source>
        <translation>视图(&amp;V)</translation>
    </message>
    <message>
        <source>Show &amp;Sidebar</source>
        <translation>显示侧边栏(&amp;S)</translation>
    </message>
    <message>
        <source>Show or hide the sidebar (Ctrl+B)</source>
        <translation>显示或隐藏侧边栏 (Ctrl+B)</translation>
    </message>
    <message>
        <source>Sidebar</source>
        <translation>侧边栏</translation>
    </message>
    <message>
        <source>&amp;Theme</source>
        <translation>主题(&amp;T)</translation>
    </message>
    <message>
        <source>&amp;Model</source>
        <translation>模型(&amp;M)</translation>
    </message>
    <message>
        <source>&amp;Settings…</source>
        <translation>设置(&amp;S)…</translation>
    </message>
    <message>
        <source>&amp;Reload Model</source>
        <translation>重新加载模型(&amp;R)</translation>
    </message>
    <message>
        <source>&amp;Help</source>
        <translation>帮助(&amp;H)</translation>
    </message>
    <message>
        <source>Open &amp;Log Folder</source>
        <translation>打开日志文件夹(&amp;L)</translation>
    </message>
    <message>
        <source>&amp;About {app}</source>
        <translation>关于 {app}(&amp;A)</translation>
    </message>
    <message>
        <source>The answer in “{title}” is still being written; it is saved in that chat.</source>
        <translation>“{title}”中的回答仍在生成，会保存在该对话中。</translation>
    </message>
    <message>
        <source>The answer in “{title}” is finished.</source>
        <translation>“{title}”中的回答已完成。</translation>
    </message>
    <message>
        <source>The answer in “{title}” was stopped.</source>
        <translation>“{title}”中的回答已停止。</translation>
    </message>
    <message>
        <source>The answer in “{title}” could not be finished.</source>
        <translation>“{title}”中的回答未能完成。</translation>
    </message>
    <message>
        <source>The answer in “{title}” ended.</source>
        <translation>“{title}”中的回答已结束。</translation>
    </message>
    <message>
        <source>Export the chat to which folder?</source>
        <translation>将对话导出到哪个文件夹？</translation>
    </message>
    <message>
        <source>Exporting the chat…</source>
        <translation>正在导出对话…</translation>
    </message>
    <message>
        <source>Exported to {path}</source>
        <translation>已导出到 {path}</translation>
    </message>
    <message>
        <source>Import a chat</source>
        <translation>导入对话</translation>
    </message>
    <message>
        <source>Chat files (*.json);;All files (*)</source>
        <translation>对话文件 (*.json);;所有文件 (*)</translation>
    </message>
    <message>
        <source>Importing {name}…</source>
        <translation>正在导入 {name}…</translation>
    </message>
    <message>
        <source>Loading the model…</source>
        <translation>正在加载模型…</translation>
    </message>
    <message>
        <source>{model} (text only: this model cannot see images)</source>
        <translation>{model}（仅文本：此模型无法看图）</translation>
    </message>
    <message>
        <source>on {server}</source>
        <translation>位于 {server}</translation>
    </message>
    <message>
        <source> · 8-bit weights</source>
        <translation> · 8 位权重</translation>
    </message>
    <message>
        <source>Settings…</source>
        <translation>设置…</translation>
    </message>
    <message>
        <source>Settings</source>
        <translation>设置</translation>
    </message>
    <message>
        <source>Starting</source>
        <translation>正在启动</translation>
    </message>
    <message>
        <source> · 4-bit weights</source>
        <translation> · 4 位权重</translation>
    </message>
    <message>
        <source>Retry</source>
        <translation>重试</translation>
    </message>
    <message>
        <source>Open Log Folder</source>
        <translation>打开日志文件夹</translation>
    </message>
    <message>
        <source>&lt;b&gt;The model could not be loaded.&lt;/b&gt; {reason}</source>
        <translation>&lt;b&gt;无法加载模型。&lt;/b&gt;{reason}</translation>
    </message>
    <message>
        <source>Model server unreachable</source>
        <translation>无法连接模型服务器</translation>
    </message>
    <message>
        <source>at {server}</source>
        <translation>位于 {server}</translation>
    </message>
    <message>
        <source>The model named by the new launch was not loaded: this window is still getting its first model. Choose it in Settings once that is done.</source>
        <translation>未加载新启动时指定的模型：此窗口仍在获取第一个模型。完成后请在“设置”中选择它。</translation>
    </message>
    <message>
        <source>Log folder</source>
        <translation>日志文件夹</translation>
    </message>
    <message>
        <source>No file manager could open the log folder. It is here:</source>
        <translation>没有文件管理器能打开日志文件夹。它位于：</translation>
    </message>
    <message>
        <source>&amp;Copy Path</source>
        <translation>复制路径(&amp;C)</translation>
    </message>
    <message>
        <source>{model} on {device} ({dtype})</source>
        <translation>{model}，运行于 {device}（{dtype}）</translation>
    </message>
    <message>
        <source>none loaded yet</source>
        <translation>尚未加载</translation>
    </message>
    <message>
        <source>&lt;p&gt;Chat about images with the Xmodel-VLM vision-language model, locally on this computer.&lt;/p&gt;&lt;p&gt;&lt;b&gt;Model in use:&lt;/b&gt; {model}&lt;br&gt;Xmodel-VLM is made by XiaoduoAILab (&lt;a href=&apos;https://huggingface.co/XiaoduoAILab/Xmodel_VLM&apos;&gt;its page&lt;/a&gt; gives its licence); it sees through OpenAI&apos;s CLIP ViT-L/14-336.&lt;/p&gt;&lt;p&gt;&lt;b&gt;Licence:&lt;/b&gt; {app} is free software under the Apache License 2.0. It uses Qt {qt} through PySide6 (LGPLv3), PyTorch and Hugging Face transformers.&lt;/p&gt;</source>
        <translation>&lt;p&gt;在这台电脑上本地运行 Xmodel-VLM 视觉语言模型，就图片进行对话。&lt;/p&gt;&lt;p&gt;&lt;b&gt;当前模型：&lt;/b&gt;{model}&lt;br&gt;Xmodel-VLM 由 XiaoduoAILab 开发（许可证见&lt;a href=&apos;https://huggingface.co/XiaoduoAILab/Xmodel_VLM&apos;&gt;其主页&lt;/a&gt;）；它通过 OpenAI 的 CLIP ViT-L/14-336 看图。&lt;/p&gt;&lt;p&gt;&lt;b&gt;许可证：&lt;/b&gt;{app} 是基于 Apache License 2.0 的自由软件。它通过 PySide6 (LGPLv3) 使用 Qt {qt}，并使用 PyTorch 和 Hugging Face transformers。&lt;/p&gt;</translation>
    </message>
    <message>
        <source>About {app}</source>
        <translation>关于 {app}</translation>
    </message>
</context>
<context>
    <name>ModelWorker</name>
    <message>
        <source>No model is loaded yet.</source>
        <translation>尚未加载模型。</translation>
    </message>
</context>
<context>
    <name>RemoteModel</name>
    <message>
        <source>The model server at {url} refused the API key ({detail}). Check the key in Settings → Model server.</source>
        <translation>位于 {url} 的模型服务器拒绝了 API 密钥（{detail}）。请在“设置 → 模型服务器”中检查密钥。</translation>
    </message>
    <message>
        <source>The model server at {url} has no such page (HTTP 404). Check the address in Settings: it is usually the server&apos;s address followed by /v1.</source>
        <translation>位于 {url} 的模型服务器没有这个页面 (HTTP 404)。请在“设置”中检查地址：通常是服务器地址后加 /v1。</translation>
    </message>
    <message>
        <source>The model server at {url} is busy ({detail}). Try again in a moment.</source>
        <translation>位于 {url} 的模型服务器正忙（{detail}）。请稍后再试。</translation>
    </message>
    <message>
        <source>The model server at {url} failed (HTTP {status}: {detail}). Try again; if it keeps failing, the server&apos;s log says why.</source>
        <translation>位于 {url} 的模型服务器出错（HTTP {status}：{detail}）。请重试；如果一直失败，可查看服务器日志了解原因。</translation>
    </message>
    <message>
        <source>The model server at {url} refused the request (HTTP {status}): {detail}</source>
        <translation>位于 {url} 的模型服务器拒绝了请求（HTTP {status}）：{detail}</translation>
    </message>
    <message>
        <source>Cannot reach the model server at {url} ({error}). Check the address in Settings and that the server is running.</source>
        <translation>无法连接位于 {url} 的模型服务器（{error}）。请在“设置”中检查地址，并确认服务器正在运行。</translation>
    </message>
    <message>
        <source>The model server at {url} sent more than {size} MiB without a break, so the app stopped reading. Check that the address in Settings is a model server; if it is, its log may say what went wrong.</source>
        <translation>{url} 处的模型服务器连续发送了超过 {size} MiB 的数据而没有换行，应用已停止读取。请检查“设置”中的地址是否为模型服务器；如果是，服务器的日志可能会说明出了什么问题。</translation>
    </message>
    <message>
        <source>The model server at {url} sent its answer compressed ({encoding}), which this app does not read. Check that the address in Settings is the model server itself.</source>
        <translation>{url} 处的模型服务器以压缩格式（{encoding}）发送了回答，本应用无法读取。请检查“设置”中的地址是否就是模型服务器本身。</translation>
    </message>
    <message>
        <source>{url} did not answer like an OpenAI-compatible server. Check the address.</source>
        <translation>{url} 的响应不像 OpenAI 兼容的服务器。请检查地址。</translation>
    </message>
    <message>
        <source>The model server at {url} sent an answer this app cannot read: its &quot;{field}&quot; was {value}, not what the OpenAI chat API sends. Check that the address in Settings is an OpenAI-compatible model server.</source>
        <translation>{url} 处的模型服务器发送了本应用无法读取的回答：其中的“{field}”为 {value}，不符合 OpenAI 聊天接口的格式。请检查“设置”中的地址是否为兼容 OpenAI 的模型服务器。</translation>
    </message>
    <message>
        <source>Connecting to {url}…</source>
        <translation>正在连接 {url}…</translation>
    </message>
    <message>
        <source>The model server at {url} serves no model.</source>
        <translation>位于 {url} 的模型服务器没有提供任何模型。</translation>
    </message>
    <message>
        <source>The model server at {url} does not serve {name}; it serves {names}. Choose one in Settings.</source>
        <translation>位于 {url} 的模型服务器没有提供 {name}；它提供的是 {names}。请在“设置”中选择其中一个。</translation>
    </message>
    <message>
        <source>{path}: cannot read the image to send it ({reason}).</source>
        <translation>{path}：无法读取要发送的图片（{reason}）。</translation>
    </message>
    <message>
        <source>The model server at {url} sent something that is not JSON.</source>
        <translation>位于 {url} 的模型服务器发来的内容不是 JSON。</translation>
    </message>
    <message>
        <source>The model server at {url} stopped the answer: {reason}</source>
        <translation>位于 {url} 的模型服务器中止了回答：{reason}</translation>
    </message>
    <message>
        <source>no reason given</source>
        <translation>未说明原因</translation>
    </message>
</context>
<context>
    <name>ServerSettingsBox</name>
    <message>
        <source>Use a model server</source>
        <translation>使用模型服务器</translation>
    </message>
    <message>
        <source>e.g. http://gpu-box:8000/v1 (xvlm serve, vLLM, LM Studio…)</source>
        <translation>例如 http://gpu-box:8000/v1（xvlm serve、vLLM、LM Studio…）</translation>
    </message>
    <message>
        <source>Server address</source>
        <translation>服务器地址</translation>
    </message>
    <message>
        <source>Only if the server asks for one</source>
        <translation>仅在服务器要求时填写</translation>
    </message>
    <message>
        <source>API key</source>
        <translation>API 密钥</translation>
    </message>
    <message>
        <source>Model on the server</source>
        <translation>服务器上的模型</translation>
    </message>
    <message>
        <source>The server&apos;s first model</source>
        <translation>服务器的第一个模型</translation>
    </message>
    <message>
        <source>Fetch models</source>
        <translation>获取模型列表</translation>
    </message>
    <message>
        <source>Fetch the server&apos;s models</source>
        <translation>获取服务器上的模型</translation>
    </message>
    <message>
        <source>No system keyring was found: the API key is kept in the settings file.</source>
        <translation>未找到系统密钥环：API 密钥将保存在设置文件中。</translation>
    </message>
    <message>
        <source>&amp;Address:</source>
        <translation>地址(&amp;A)：</translation>
    </message>
    <message>
        <source>API &amp;key:</source>
        <translation>API 密钥(&amp;K)：</translation>
    </message>
    <message>
        <source>M&amp;odel:</source>
        <translation>模型(&amp;O)：</translation>
    </message>
    <message>
        <source>Asking the server for its models…</source>
        <translation>正在向服务器获取模型列表…</translation>
    </message>
    <message>
        <source>The server offers 1 model.</source>
        <translation>服务器提供 1 个模型。</translation>
    </message>
    <message>
        <source>The server offers {count} models.</source>
        <translation>服务器提供 {count} 个模型。</translation>
    </message>
    <message>
        <source>The chat answers with a model on another computer (xvlm serve, vLLM, LM Studio…); nothing is downloaded here. You can change this later in Settings.</source>
        <translation>聊天将使用另一台计算机上的模型回答（xvlm serve、vLLM、LM Studio…），本机无需下载任何内容。之后可以在“设置”中更改。</translation>
    </message>
    <message>
        <source>&amp;Use This Server</source>
        <translation>使用此服务器(&amp;U)</translation>
    </message>
</context>
<context>
    <name>Settings</name>
    <message>
        <source>The setting “{name}” was {value}, which cannot be used; it is back to its default, {default}.</source>
        <translation>设置“{name}”的值为 {value}，无法使用；已恢复为默认值 {default}。</translation>
    </message>
    <message>
        <source>The settings could not be read, so all of them are at their defaults: {reason}</source>
        <translation>无法读取设置，所有设置均已恢复为默认值：{reason}</translation>
    </message>
    <message>
        <source>The settings file {path} is damaged, so all settings are at their defaults.</source>
        <translation>设置文件 {path} 已损坏，所有设置均已恢复为默认值。</translation>
    </message>
</context>
<context>
    <name>SettingsDialog</name>
    <message>
        <source>Automatic</source>
        <translation>自动</translation>
    </message>
    <message>
        <source>float32 (most memory)</source>
        <translation>float32（占用内存最多）</translation>
    </message>
    <message>
        <source>Exact (bf16/fp16/fp32 weights)</source>
        <translation>精确（bf16/fp16/fp32 权重）</translation>
    </message>
    <message>
        <source>Faster: 8-bit weights (answers may differ slightly)</source>
        <translation>更快：8 位权重（回答可能略有不同）</translation>
    </message>
    <message>
        <source>Fastest: 4-bit weights (answers may differ more)</source>
        <translation>最快：4 位权重（回答可能差异更大）</translation>
    </message>
    <message>
        <source>Automatic (llama.cpp on the CPU where installed)</source>
        <translation>自动（已安装时在 CPU 上使用 llama.cpp）</translation>
    </message>
    <message>
        <source>PyTorch (every device)</source>
        <translation>PyTorch（所有设备）</translation>
    </message>
    <message>
        <source>llama.cpp (CPU only, faster answers)</source>
        <translation>llama.cpp（仅 CPU，回答更快）</translation>
    </message>
    <message>
        <source>Settings</source>
        <translation>设置</translation>
    </message>
    <message>
        <source>Default: Xmodel-VLM from the model hub</source>
        <translation>默认：来自模型仓库的 Xmodel-VLM</translation>
    </message>
    <message>
        <source>Model folder or hub repository</source>
        <translation>模型文件夹或模型仓库</translation>
    </message>
    <message>
        <source>Browse…</source>
        <translation>浏览…</translation>
    </message>
    <message>
        <source>Choose a model folder</source>
        <translation>选择模型文件夹</translation>
    </message>
    <message>
        <source>Default: the one the model names</source>
        <translation>默认：模型指定的那个</translation>
    </message>
    <message>
        <source>Vision tower folder or hub repository</source>
        <translation>视觉编码器文件夹或模型仓库</translation>
    </message>
    <message>
        <source>Device</source>
        <translation>设备</translation>
    </message>
    <message>
        <source>{device} (not found on this machine)</source>
        <translation>{device}（本机上未找到）</translation>
    </message>
    <message>
        <source>Precision</source>
        <translation>精度</translation>
    </message>
    <message>
        <source>8-bit weights decode faster on a CPU and take about half the memory, 4-bit weights faster still in about a third; the answers are close to the exact model&apos;s but not the same.</source>
        <translation>8 位权重在 CPU 上生成更快，内存占用约减半；4 位权重更快，内存约为三分之一；回答与精确模型接近，但不完全相同。</translation>
    </message>
    <message>
        <source>Engine</source>
        <translation>推理引擎</translation>
    </message>
    <message>
        <source>Number format</source>
        <translation>数值格式</translation>
    </message>
    <message>
        <source>0 (always the likeliest word)</source>
        <translation>0（总是选最可能的词）</translation>
    </message>
    <message>
        <source>Temperature</source>
        <translation>温度</translation>
    </message>
    <message>
        <source>Top-p</source>
        <translation>Top-p</translation>
    </message>
    <message>
        <source>At most {count} tokens: the most the model reads and writes at once</source>
        <translation>最多 {count} 个 token：模型一次能读写的上限</translation>
    </message>
    <message>
        <source>Longest answer in tokens</source>
        <translation>最长回答（token 数）</translation>
    </message>
    <message>
        <source>Empty: the prompt the model was trained with</source>
        <translation>留空：使用模型训练时的提示词</translation>
    </message>
    <message>
        <source>System prompt</source>
        <translation>系统提示词</translation>
    </message>
    <message>
        <source>Default: https://huggingface.co (or HF_ENDPOINT)</source>
        <translation>默认：https://huggingface.co（或 HF_ENDPOINT）</translation>
    </message>
    <message>
        <source>Model hub address or mirror</source>
        <translation>模型仓库地址或镜像</translation>
    </message>
    <message>
        <source>Language</source>
        <translation>语言</translation>
    </message>
    <message>
        <source>The language changes at once, when you press OK.</source>
        <translation>按“确定”后，语言立即切换。</translation>
    </message>
    <message>
        <source>Running now: {model}, as the app was started with it. The model above is loaded when you change it, and at the next start.</source>
        <translation>正在运行：{model}（启动应用时指定的）。更改上面的模型时会立即加载它，下次启动时也会使用它。</translation>
    </message>
    <message>
        <source>&amp;Model:</source>
        <translation>模型(&amp;M)：</translation>
    </message>
    <message>
        <source>What runs the language model. llama.cpp answers several times faster on a CPU; PyTorch also runs on a GPU. Both run the weights the precision above names.</source>
        <translation>运行语言模型的引擎。llama.cpp 在 CPU 上回答快数倍；PyTorch 也能在 GPU 上运行。两者运行的都是上方“精度”所选的权重。</translation>
    </message>
    <message>
        <source>&amp;Vision tower:</source>
        <translation>视觉编码器(&amp;V)：</translation>
    </message>
    <message>
        <source>&amp;Device:</source>
        <translation>设备(&amp;D)：</translation>
    </message>
    <message>
        <source>P&amp;recision:</source>
        <translation>精度(&amp;R)：</translation>
    </message>
    <message>
        <source>&amp;Number format:</source>
        <translation>数值格式(&amp;N)：</translation>
    </message>
    <message>
        <source>&amp;Engine:</source>
        <translation>推理引擎(&amp;E)：</translation>
    </message>
    <message>
        <source>&amp;Temperature:</source>
        <translation>温度(&amp;T)：</translation>
    </message>
    <message>
        <source>Top-&amp;p:</source>
        <translation>Top-&amp;p：</translation>
    </message>
    <message>
        <source>&amp;Longest answer:</source>
        <translation>最长回答(&amp;L)：</translation>
    </message>
    <message>
        <source>&amp;System prompt:</source>
        <translation>系统提示词(&amp;S)：</translation>
    </message>
    <message>
        <source>Model &amp;hub:</source>
        <translation>模型仓库(&amp;H)：</translation>
    </message>
    <message>
        <source>L&amp;anguage:</source>
        <translation>语言(&amp;A)：</translation>
    </message>
    <message>
        <source>Changing the model, device, precision, number format or engine reloads the model in the background; a new language applies at once.</source>
        <translation>更改模型、设备、精度、数值格式或推理引擎会在后台重新加载模型；新的语言立即生效。</translation>
    </message>
    <message>
        <source>Choose the model folder</source>
        <translation>选择模型文件夹</translation>
    </message>
</context>
<context>
    <name>TransferBar</name>
    <message>
        <source>Cancel</source>
        <translation>取消</translation>
    </message>
    <message>
        <source>Cancelling…</source>
        <translation>正在取消…</translation>
    </message>
</context>
<context>
    <name>main</name>
    <message>
        <source>Something went wrong that the app has no message for. It keeps running; if something looks wrong, start a new chat or restart it. The details are in the log (Help → Open Log Folder).</source>
        <translation>出现了一个应用无法说明的问题。应用仍在运行；如果有异常，请开始新对话或重启应用。详细信息见日志（帮助 → 打开日志文件夹）。</translation>
    </message>
</context>
</TS>
